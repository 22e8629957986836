"""USER resolved as Docker's daemon does (runc's libcontainer/user at moby v20.10.24): root in every
spelling is refused, names go through the image's own /etc/passwd and /etc/group."""

from __future__ import annotations

import pytest

from harness.errors import ImageError
from harness.sandbox.users import resolve_user

PASSWD = "\n".join(
    [
        "root:x:0:0:root:/root:/bin/sh",
        "toor:x:0:0:also root:/:/bin/sh",
        "  app:x:1000:1000::/home/app:/bin/sh  ",  # runc trims passwd lines
        "app:x:2000:2000::/:/bin/sh",  # a second app: the first one wins
        "staffer:x:1001:50::/:/bin/sh\r",  # CRLF
        "wheelie:x:1002:0::/:/bin/sh",  # primary group root
        "broken:x:abc:1000::/:/bin/sh",  # a uid that is not a number reads as 0
        "huge:x:4294967296:4294967296::/:/bin/sh",  # truncated to 0 by the daemon's uint32
        "short",  # too few fields: uid and gid 0
        "nobody:x:65534:65534::/:/bin/false",
    ]
)
GROUP = "\n".join(["root:x:0:app", "staff:x:50:", "app:x:1000:", " spaced:x:70:"])

ROOT = "runs as uid 0 (root)"
ROOT_GROUP = "runs as group 0 (root)"
UNKNOWN_USER = "is not in its /etc/passwd"
UNKNOWN_GROUP = "is not in its /etc/group"
RANGE = "ids must be 1 to 2147483647"


@pytest.mark.parametrize(
    ("user", "expected"),
    [
        # root, however spelled
        ("", ROOT),
        ("root", ROOT),
        ("0", ROOT),
        ("00", ROOT),
        ("+0", ROOT),
        ("-0", ROOT),
        ("000:0", ROOT),
        (":1000", ROOT),  # an empty user part is the default: root
        ("toor", ROOT),
        ("broken", ROOT),
        ("short", ROOT),
        # group 0
        ("65534:0", ROOT_GROUP),
        ("65534:+00", ROOT_GROUP),
        ("nobody:root", ROOT_GROUP),
        ("wheelie", ROOT_GROUP),
        ("1002", ROOT_GROUP),  # numeric, but its passwd entry has group 0
        # out of range, or not numbers to Go
        ("huge", RANGE),
        ("4294967296", RANGE),
        ("-1", RANGE),
        ("1000:-5", RANGE),
        ("1_000", UNKNOWN_USER),  # int() would take these; strconv.Atoi does not
        (" 1000", UNKNOWN_USER),
        ("١٠٠٠", UNKNOWN_USER),  # Arabic-Indic digits
        ("99999999999999999999", UNKNOWN_USER),  # past int64: not a number to Go, so a name
        # unknown names
        ("ghost", UNKNOWN_USER),
        ("app:ghosts", UNKNOWN_GROUP),
        ("app:spaced", UNKNOWN_GROUP),  # group lines are not trimmed
        # fine
        ("app", (1000, 1000)),
        ("app:staff", (1000, 50)),
        ("app:50", (1000, 50)),
        ("app:60", (1000, 60)),  # a numeric group needs no entry
        ("staffer", (1001, 50)),
        ("1000", (1000, 1000)),  # numeric, found in passwd: its group
        ("1000:1000:0", (1000, 1000)),  # runc reads two fields; the rest is ignored
        ("3000", (3000, 65534)),  # numeric, no entry, no group: nogroup instead of Docker's 0
        ("65534:65534", (65534, 65534)),
        ("nobody", (65534, 65534)),
    ],
)
def test_user_resolution(user, expected):
    if isinstance(expected, tuple):
        assert resolve_user(user, passwd=PASSWD, group=GROUP) == expected
    else:
        with pytest.raises(ImageError) as caught:
            resolve_user(user, passwd=PASSWD, group=GROUP)
        assert expected in caught.value.message, caught.value.message
        assert caught.value.message.endswith("(e.g. USER 65534:65534)")


def test_without_user_files():
    # A scratch image: numbers only, and a name cannot be resolved.
    assert resolve_user("1000", passwd=None, group=None) == (1000, 65534)
    assert resolve_user("1000:2000", passwd=None, group=None) == (1000, 2000)
    for user in ("app", "1000:app", "0", "1000:0"):
        with pytest.raises(ImageError):
            resolve_user(user, passwd=None, group=None)


def test_a_line_the_daemon_cannot_scan_is_refused():
    with pytest.raises(ImageError, match="longer than 64 KiB"):
        resolve_user("app", passwd="x" * 70_000 + "\napp:x:1000:1000::/:/bin/sh", group=None)
