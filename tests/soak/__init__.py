"""The soak: the whole product at fleet scale on one machine (`just soak`)."""
