"""gRPC ingest: the grpclib service (asyncio) and the bridge that hands its reports to trio."""
