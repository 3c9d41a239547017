"""Pure pieces: versions, serial checks, coalescing, settings."""

from __future__ import annotations

import dataclasses
import io
import re
from pathlib import Path

import pytest
import semver
from hypothesis import given
from hypothesis import strategies as st

from droneshield import config, domain
from droneshield.domain import check_serial
from droneshield.errors import InvalidReport, InvalidVersion
from droneshield.provisioning import CsvHeaderError, Rows, from_csv
from droneshield.reports import Pending, check_version
from droneshield.writer import coalesce

README = Path(__file__).resolve().parents[1] / "README.md"

semvers = st.builds(
    lambda a, b, c, pre: f"{a}.{b}.{c}" + (f"-{pre}" if pre else ""),
    st.integers(0, 10_000),
    st.integers(0, 10_000),
    st.integers(0, 10_000),
    st.sampled_from(["", "rc.1", "beta", "alpha.2.x-y"]),
)


@given(semvers, st.sampled_from(["", "v", "V"]))
def test_version_canonical_form_drops_the_prefix(text, prefix):
    assert domain.canonical(prefix + text) == text
    assert domain.display(domain.canonical(prefix + text)) == "v" + text


@given(semvers, st.sampled_from(["software_v", "v", "", "fw-"]))
def test_version_is_read_from_release_file_names(text, stem):
    assert domain.from_filename(f"{stem}{text}.pdf") == text


@pytest.mark.parametrize(
    "name",
    [
        "release.pdf",
        "v1.2.pdf",
        "1.2.3.4.pdf",
        "a_v1.0.0_v2.0.0.pdf",
        "v01.2.3.pdf",
        "v1.2.3-rc.01.pdf",
        "v1.2.3-.pdf",
        "v1.2.3-alpha..1.pdf",
        "v1.2.3+.pdf",
        "v1.2.3-" + "a" * 130 + ".pdf",  # longer than a sensor may report
    ],
)
def test_file_names_without_exactly_one_version_are_refused(name):
    with pytest.raises(InvalidVersion):
        domain.from_filename(name)


@given(st.lists(semvers, min_size=2, max_size=8, unique=True))
def test_sort_key_follows_semver_precedence(items):
    ordered = sorted(items, key=domain.sort_key)
    assert ordered == sorted(items, key=semver.Version.parse)


@given(
    st.text(
        alphabet=st.characters(min_codepoint=0x20, max_codepoint=0x7E), min_size=1, max_size=128
    )
)
def test_printable_ascii_serials_are_accepted(serial):
    assert check_serial(serial) == serial


@pytest.mark.parametrize("serial", ["", "x" * 129, "é", "a\tb", "\x00"])
def test_other_serials_are_refused(serial):
    with pytest.raises(InvalidReport):
        check_serial(serial)


def test_malformed_version_is_kept_out_with_a_reason():
    assert check_version("v1.2.3") == ("1.2.3", None)
    version, note = check_version("1.2")
    assert version is None
    assert "not a semantic version" in note


def _p(serial: str, version: str | None) -> Pending:
    return Pending(serial, version, None, 0.0, lambda _: None)


def test_coalesce_keeps_one_sorted_row_per_sensor_last_usable_version_wins():
    batch = [_p("b", "1.0.0"), _p("a", None), _p("b", "2.0.0"), _p("b", None), _p("c", None)]
    assert coalesce(batch) == (["a", "b", "c"], [None, "2.0.0", None])


def test_settings_come_from_flags_then_env_then_defaults():
    settings = config.from_mapping(
        {"http_port": "9000"},
        {"DRONESHIELD_HTTP_PORT": "1", "DRONESHIELD_OFFLINE_AFTER": "12.5", "DATABASE_URL": "x"},
    )
    assert settings.http_port == 9000
    assert settings.offline_after == 12.5
    assert settings.database_url == "x"
    assert settings.grpc_port == config.GRPC_PORT_DEFAULT


def test_a_bad_setting_names_its_variable():
    with pytest.raises(ValueError, match="DRONESHIELD_GRPC_PORT"):
        config.from_mapping({}, {"DRONESHIELD_GRPC_PORT": "lots"})


def test_every_setting_is_documented_in_the_readme():
    table = README.read_text()
    missing = [
        config.env_name(f)
        for f in dataclasses.fields(config.Settings)
        if not re.search(rf"\| `{config.env_name(f)}` \|", table)
    ]
    assert not missing, f"README settings table lacks {missing}"


@pytest.mark.parametrize(
    ("key", "value"), [("OFFLINE_AFTER", "0"), ("HTTP_PORT", "70000"), ("POOL_SIZE", "1")]
)
def test_out_of_range_settings_are_refused(key, value):
    with pytest.raises(ValueError, match="must be"):
        config.from_mapping({}, {f"DRONESHIELD_{key}": value})


@pytest.mark.parametrize(
    ("variables", "says"),
    [
        # An HTTP/2 setting h2 refused on every connection, after the daemon had started.
        ({"GRPC_MAX_STREAMS": "5000000000"}, "grpc_max_streams must be 1 to 2,147,483,647"),
        # 864 million slots: the daemon ran out of memory at start.
        ({"OFFLINE_AFTER": "86400", "WHEEL_RESOLUTION": "0.0001"}, "raise wheel_resolution"),
        # gRPC took the port, then "HTTP port … is in use" blamed something else.
        ({"HTTP_PORT": "50051", "GRPC_PORT": "50051"}, "http_port and grpc_port must differ"),
    ],
)
def test_settings_the_daemon_could_not_run_with_are_refused_at_once(variables, says):
    with pytest.raises(ValueError, match=says):
        config.from_mapping({}, {f"DRONESHIELD_{k}": v for k, v in variables.items()})


def test_a_day_offline_at_the_default_resolution_and_both_ports_picked_are_allowed():
    config.from_mapping({}, {"DRONESHIELD_OFFLINE_AFTER": "86400"})
    config.from_mapping({}, {"DRONESHIELD_HTTP_PORT": "0", "DRONESHIELD_GRPC_PORT": "0"})


@pytest.mark.parametrize(
    ("text", "read", "errors"),
    [
        pytest.param(
            '\ufeffserial,site,label\r\nA-1,n,\r\n\r\nA-2,"x\r\ny",\r\nA-3,s,\r\n',
            [("A-1", 2), ("A-3", 6)],
            [(4, "invalid_field")],
            id="crlf-bom-blank-quoted-newline",
        ),
        pytest.param(
            'serial,site\nA-1,n\n"A-2"x,s\nA-3,s\n   \nA-4,t\n,\nA-5,u\n',
            [("A-1", 2), ("A-3", 4), ("A-4", 6), ("A-5", 8)],
            [(3, "invalid_csv")],
            id="stray-quote-spaces-empty-row",
        ),
        pytest.param(
            'serial,site\nA-1,n\n,"\n"\nA\x012,s\nA-3,t\n',
            [("A-1", 2), ("A-3", 6)],
            [(5, "invalid_serial")],
            id="an-empty-row-of-two-lines",
        ),
        pytest.param(
            'serial,site\nA-1,n\n\nA-2,"open\nA-3,s\n',
            [("A-1", 2)],
            [(5, "invalid_csv")],
            id="quote-open-to-the-end",
        ),
        pytest.param(
            "\n  \n,\nserial,site\nA-1,n\nA\x012,s\n",
            [("A-1", 5)],
            [(6, "invalid_serial")],
            id="blank-lines-above-the-header",
        ),
    ],
)
def test_csv_rows_know_their_lines(text: str, read: list, errors: list) -> None:
    """A CSV row's line, as an editor numbers it, past byte order marks, CRLF, blank lines,
    lines of spaces, empty rows and quoted newlines."""
    rows = Rows()
    got = [(s.serial, rows.line(i)) for i, s in from_csv(io.StringIO(text, newline="\n"), rows)]
    assert got == read
    assert [(e.line, e.code) for e in rows.errors] == errors


def test_spaces_around_csv_fields_are_not_kept() -> None:
    rows = Rows()
    text = ' A-1 ,  north gate  , x\nA-2," s ",\n"A 3 ",,  \n'
    got = [s for _, s in from_csv(io.StringIO("serial,site,label\n" + text, newline="\n"), rows)]
    assert got == [("A-1", "north gate", "x"), ("A-2", "s", None), ("A 3", None, None)]
    assert not rows.errors


def test_a_space_after_a_closing_quote_is_refused_saying_so() -> None:
    rows = Rows()
    list(from_csv(io.StringIO('serial,site\nA-1, "north" \n', newline="\n"), rows))
    [error] = rows.errors
    assert (error.line, error.code) == (2, "invalid_csv")
    assert "no space after it" in error.message


def test_a_header_below_blank_lines_is_named_by_its_line() -> None:
    with pytest.raises(CsvHeaderError, match=r"line 3\) cannot be read"):
        list(from_csv(io.StringIO('\n\nserial,"site\n', newline="\n"), Rows()))


@pytest.mark.parametrize(("text", "line"), [('serial\nA-1\n"A-2\nA-3\n', 3), ('serial\n"A-1\n', 2)])
def test_a_quote_left_open_says_where_its_row_may_start(text: str, line: int) -> None:
    rows = Rows()
    list(from_csv(io.StringIO(text, newline="\n"), rows))
    [error] = rows.errors
    assert f"its row starts on line {line} or after" in error.message
