"""The admission rules (`droneshield.admission`), with the clock passed in: caps per port and per
address, the connection rate per address, the penalty after a broken budget, address keys."""

from __future__ import annotations

from droneshield.admission import Admission, Limits, address_key

LIMITS = Limits(max_connections=4, per_address=2, rate=3, penalty=10.0)


def test_per_address_cap_leaves_other_addresses_alone_and_frees_on_release():
    admission = Admission(LIMITS, "test")
    assert admission.admit("10.0.0.1", 0.0)
    assert admission.admit("10.0.0.1", 0.0)
    assert not admission.admit("10.0.0.1", 0.0)
    assert admission.admit("10.0.0.2", 0.0)
    admission.release("10.0.0.1")
    assert admission.admit("10.0.0.1", 5.0)


def test_port_cap_counts_every_address():
    admission = Admission(LIMITS, "test")
    for n in range(4):
        assert admission.admit(f"10.0.0.{n}", float(n))
    assert not admission.admit("10.0.0.9", 10.0)
    admission.release("10.0.0.0")
    assert admission.admit("10.0.0.9", 20.0)
    assert admission.open == 4


def test_rate_counts_new_connections_per_address_within_a_second():
    admission = Admission(Limits(max_connections=100, per_address=100, rate=3), "test")
    assert all(admission.admit("10.0.0.1", 0.1 * n) for n in range(3))
    assert not admission.admit("10.0.0.1", 0.5)  # a fourth within the second
    assert admission.admit("10.0.0.2", 0.5)
    assert admission.admit("10.0.0.1", 1.0)  # a new second
    refused = Admission(Limits(max_connections=100, per_address=100, rate=1), "test")
    assert refused.admit("10.0.0.1", 0.0)
    assert not refused.admit("10.0.0.1", 0.0)  # refusals count as attempts too
    assert not refused.admit("10.0.0.1", 0.9)


def test_penalised_address_is_refused_for_the_penalty_then_admitted():
    admission = Admission(LIMITS, "test")
    assert admission.admit("10.0.0.1", 0.0)
    admission.penalise("10.0.0.1", 0.0)
    admission.release("10.0.0.1")
    assert not admission.admit("10.0.0.1", 9.9)
    assert admission.admit("10.0.0.2", 9.9)
    assert admission.admit("10.0.0.1", 10.0)
    unpunished = Admission(Limits(max_connections=4, per_address=2, rate=3), "test")
    unpunished.penalise("10.0.0.1", 0.0)  # no penalty set: nothing happens
    assert unpunished.admit("10.0.0.1", 0.0)


def test_address_keys_count_ipv6_by_its_64_and_mapped_ipv4_as_ipv4():
    assert address_key("192.0.2.7") == "192.0.2.7"
    assert address_key("::ffff:192.0.2.7") == "192.0.2.7"
    assert address_key("2001:db8:1:2:aaaa::1") == address_key("2001:db8:1:2:bbbb::9")
    assert address_key("2001:db8:1:2::1") != address_key("2001:db8:1:3::1")
    assert address_key("fe80::1%eth0") == "fe80::/64"
    assert address_key("") == ""
