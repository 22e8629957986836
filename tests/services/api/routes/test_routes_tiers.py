"""services/api/routes/tiers.py (and health.py): the tiers as listed, and their downloads
(Public with truth, Dev without, Hidden never).
"""

from __future__ import annotations


def _error(r, status: int, code: str, message: str | None = None) -> None:
    assert r.status_code == status, r.text
    body = r.json()["error"]
    assert body["code"] == code
    if message is not None:
        assert body["message"] == message


def test_health_and_tiers(client):
    assert client.get("/api/v1/health").json()["status"] == "ok"
    tiers = client.get("/api/v1/tiers").json()
    assert tiers["count"] == 4
    hidden = next(t for t in tiers["data"] if t["name"] == "hidden")
    assert hidden["downloadable"] is False and hidden["submit_as"] == "container image"
    assert hidden["ranges"]["absorption_correction_error"] == [-2.1, 6.9]


def test_downloads(seeded, tmp_path):
    import h5py

    public = tmp_path / "p.h5"
    public.write_bytes(seeded.get("/api/v1/tiers/public/measurement").content)
    dev = tmp_path / "d.h5"
    dev.write_bytes(seeded.get("/api/v1/tiers/dev/measurement").content)
    with h5py.File(public) as f:
        assert "x_true" in f["scenes/public-s0"] and "seed" not in f.attrs
    with h5py.File(dev) as f:
        assert "x_true" not in f["scenes/dev-s0"] and "seed" not in f.attrs
    _error(
        seeded.get("/api/v1/tiers/hidden/measurement"),
        403,
        "forbidden",
        "the hidden tier's measurements are never downloadable; submit a container image",
    )
    _error(
        seeded.get("/api/v1/tiers/gold/measurement"),
        422,
        "invalid_request",
        "tier: Input should be 'public', 'dev', 'hidden' or 'standard' (got 'gold')",
    )
    _error(
        seeded.get("/api/v1/tiers/standard/measurement"),
        404,
        "not_found",
        "the standard tier has no dataset yet; an organizer must seed it",
    )
