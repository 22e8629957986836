"""Hostile images against the runner's own defences (issue 15): a 5,000-deep tree in /output, a
declared VOLUME, and a USER that is root under another spelling. Real daemon, images built from
scratch + busybox."""

from __future__ import annotations

import uuid
from pathlib import Path

import pytest

from harness.sandbox import Outcome, remove_tree

pytestmark = pytest.mark.docker

#: Builds a chain of 1,280 directories with one `mkdir -p` (a 2,559-character relative path, under
#: PATH_MAX), then grows it to 5,120 levels by moving the chain into its own copy's bottom three
#: times: no single path the shell hands the kernel passes PATH_MAX, but the tree does by far.
#: Then it writes files forever: only the caps can stop it.
DEEP_TREE = (
    "cd /output; p=d/d/d/d/d/d/d/d/d/d; for k in 1 2 3 4 5 6 7; do p=$p/$p; done; mkdir -p $p; "
    "for k in 1 2 3; do mv d a && mkdir -p $p && mv a $p/; done; "
    "i=0; while :; do echo x > f$i; i=$((i+1)); done"
)


def test_a_5000_deep_tree_is_charged_stopped_and_removed(run):
    r = run(DEEP_TREE, wall_seconds=20, output_files=500)
    assert r.outcome == Outcome.output_too_large, r
    assert r.message == "/output nests directories more than 32 levels deep (the cap); the run was stopped"
    assert r.runtime_seconds < 10  # stopped by the watcher, not by the wall time
    work = Path(run.last_spec.work_dir)
    assert (work / "output" / "d").is_dir()
    assert len(list((work / "output").iterdir())) < 500  # the file cap held too
    assert remove_tree(work) and not work.exists()


def test_the_depth_cap_is_a_limit(run):
    r = run("mkdir -p /output/a/b/c/d && echo ok > /output/a/b/c/d/result.h5 && echo ok > /output/result.h5")
    assert r.outcome == Outcome.succeeded, r  # 4 levels: fine under the default
    r = run("mkdir -p /output/a/b/c/d && echo ok > /output/result.h5", output_depth=3)
    assert r.outcome == Outcome.output_too_large, r
    assert r.message.startswith("/output nests directories more than 3 levels deep (the cap)")


def _volumes_holding(client, marker: str) -> list[str]:
    """Names of the daemon's volumes with a file ``mark`` holding ``marker`` (this test's writes)."""
    found = []
    for volume in client.volumes.list():
        mark = Path(volume.attrs["Mountpoint"]) / "mark"
        try:
            if mark.read_text().strip() == marker:
                found.append(volume.name)
        except OSError:
            pass
    return found


def test_a_declared_volume_is_a_capped_tmpfs_and_leaves_nothing(run, derived_image, images):
    image = derived_image("edx-arena-test/volume:latest", "VOLUME /data", 'VOLUME ["//var/cache/./app/"]')
    before = {v.name for v in images.volumes.list()}
    marker = uuid.uuid4().hex
    r = run(
        f"echo {marker} > /data/mark; echo {marker} > /var/cache/app/mark; grep -E ' /data | /var/cache/app ' /proc/mounts; "
        "dd if=/dev/zero of=/data/big bs=1M count=64 2>&1; ls -l /data/big",
        image=image,
        tmpfs_bytes=4 * 2**20,
    )
    assert r.outcome == Outcome.missing_output, r
    mounts = [line for line in r.log.splitlines() if line.startswith("tmpfs /")]
    assert len(mounts) == 2, r.log
    for line in mounts:
        options = line.split()[3].split(",")
        assert {"nosuid", "nodev", "noexec", "size=4096k"} <= set(options), line
    assert "No space left on device" in r.log
    size = int(next(line for line in r.log.splitlines() if line.endswith(" /data/big")).split()[4])
    assert 3 * 2**20 < size <= 4 * 2**20  # the write stopped at the tmpfs size (the mark file has a page)
    # Nothing of this run stays on the daemon: no new anonymous volume, none holding its writes.
    anonymous = {v.name for v in images.volumes.list() if len(v.name) == 64} - before
    assert anonymous == set() and _volumes_holding(images, marker) == []


@pytest.mark.parametrize(
    ("volume", "message"),
    [
        ("VOLUME /proc/x", "the image declares VOLUME '/proc/x' over a system directory; remove it"),
        (
            "VOLUME /output/cache",
            "the image declares VOLUME '/output/cache' inside the sandbox's 'output' mount; remove it",
        ),
    ],
)
def test_a_volume_over_the_sandbox_or_the_kernel_is_refused(run, derived_image, volume, message):
    tag = f"edx-arena-test/volume-bad:{abs(hash(volume)) % 10**8}"
    r = run("true", image=derived_image(tag, volume))
    assert r.outcome == Outcome.image_invalid, r
    assert r.message == message


def test_a_name_that_is_uid_0_in_the_image_is_refused(run, derived_image):
    image = derived_image(
        "edx-arena-test/toor:latest",
        "RUN mkdir -p /etc && echo 'toor:x:0:0:not root, honest:/:/bin/sh' > /etc/passwd && echo 'toor:x:0:' > /etc/group",
        "USER toor",
    )
    r = run("id", image=image, allow_image_user=True)
    assert r.outcome == Outcome.image_invalid, r
    assert r.message.startswith("the image's USER toor runs as uid 0 (root)")
    r = run("id -u", image=image)  # without the setting the image runs as 65534, whatever its USER
    assert r.log.strip().splitlines()[-1] == "65534", r


@pytest.mark.parametrize("user", ["00", "+0", "000:0", "65534:0"])
def test_root_in_another_spelling_is_refused(run, derived_image, user):
    tag = f"edx-arena-test/user-spelling:{user.replace(':', '-').replace('+', 'plus')}"
    r = run("id", image=derived_image(tag, f"USER {user}"), allow_image_user=True)
    assert r.outcome == Outcome.image_invalid, r
    assert "runs as uid 0 (root)" in r.message or "runs as group 0 (root)" in r.message, r.message


def test_a_named_user_runs_as_its_ids_without_extra_groups(run, derived_image):
    image = derived_image(
        "edx-arena-test/named-user:latest",
        "RUN mkdir -p /etc && printf 'app:x:1000:1000::/:/bin/sh\\n' > /etc/passwd"
        " && printf 'root:x:0:app\\napp:x:1000:\\n' > /etc/group",
        "USER app",
    )
    r = run("id -u; id -g; id -G", image=image, allow_image_user=True)
    assert r.outcome == Outcome.missing_output, r
    # /etc/group lists app in group 0: Docker would add it as a supplementary group; not here.
    assert r.log.strip().splitlines()[-3:] == ["1000", "1000", "1000"], r.log


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (
            "dd if=/dev/zero of=/etc/passwd bs=1024 count=2000",
            "the image's /etc/passwd is a link or larger than 1048576 bytes; make it a small regular file",
        ),
        (
            "ln -s /proc/self/environ /etc/passwd",
            "the image's /etc/passwd is a link or larger than 1048576 bytes; make it a small regular file",
        ),
    ],
    ids=["huge", "link"],
)
def test_user_files_are_read_with_a_cap_and_never_through_a_link(run, derived_image, make, message):
    image = derived_image(f"edx-arena-test/user-files:{make.split()[0]}", f"RUN mkdir -p /etc && {make}", "USER app")
    r = run("id", image=image, allow_image_user=True)
    assert r.outcome == Outcome.image_invalid, r
    assert r.message == message


@pytest.mark.parametrize("allow_image_user", [False, True])
def test_a_volume_over_a_file_is_the_images_fault(run, images, allow_image_user):
    # The builder refuses this; a hand-made config (docker commit --change, or an edited archive)
    # does not. The daemon's create failed on it with a 500: a free platform_error.
    maker = images.containers.run("edx-arena-test/busybox:latest", ["touch /afile"], detach=True)
    try:
        maker.wait(timeout=60)
        maker.commit("edx-arena-test/volume-file", "latest", changes=['VOLUME ["/afile"]', "USER 1000"])
    finally:
        maker.remove(force=True)
    r = run("true", image="edx-arena-test/volume-file:latest", allow_image_user=allow_image_user)
    assert r.outcome == Outcome.image_invalid, r
    assert r.message.startswith("the image could not be started"), r.message
