"""harness/tiers.py: the tier rules table is design §3 written once."""

from __future__ import annotations

import pytest

from harness.tiers import BLIND_TIERS, SANDBOXED_KINDS, TIER_RANGES, TIER_RULES, TIERS, Kind, tier_rules


def test_the_table_is_design_section_3():
    public, dev, hidden, standard = (TIER_RULES[t] for t in ("public", "dev", "hidden", "standard"))
    # who may download what
    assert (public.downloadable, dev.downloadable, hidden.downloadable, standard.downloadable) == (
        True,
        True,
        False,
        True,
    )
    assert (public.truth_in_view, dev.truth_in_view, hidden.truth_in_view) == (True, False, False)
    assert standard.truth_in_view is None  # the organizer's choice, per dataset
    # how each is submitted and ranked
    assert public.kinds == dev.kinds == standard.kinds == (Kind.hdf5,)
    assert hidden.kinds == SANDBOXED_KINDS == (Kind.container, Kind.script)
    assert [r.server_runs for r in TIER_RULES.values()] == [False, False, True, False]
    assert [r.submit_as for r in TIER_RULES.values()] == [
        "HDF5 result",
        "HDF5 result",
        "container image",
        "HDF5 result",
    ]
    assert [r.score for r in TIER_RULES.values()] == ["blind", "blind", "blind", "standard"]
    # nothing of a tier nobody may download is ever pictured
    assert [r.pictured for r in TIER_RULES.values()] == [True, True, False, True]


def test_tier_lists_come_from_the_table():
    assert TIERS == ("public", "dev", "hidden", "standard") == tuple(TIER_RANGES)
    assert BLIND_TIERS == ("public", "dev", "hidden")


@pytest.mark.parametrize(
    ("tier", "organizer_published", "discloses"),
    [
        ("public", False, True),
        ("dev", False, False),
        ("hidden", False, False),
        ("standard", False, False),
        ("standard", True, True),
        # the organizer's flag cannot open a tier whose rules say never
        ("dev", True, False),
        ("hidden", True, False),
    ],
)
def test_the_true_spec_is_disclosed_only_where_it_is_published(tier, organizer_published, discloses):
    rules = tier_rules(tier)
    assert rules.truth_published(organizer_choice=organizer_published) is discloses
    assert rules.discloses_true_spec(truth_in_view=organizer_published) is discloses


def test_unknown_tier_names_the_known_ones():
    with pytest.raises(ValueError, match="unknown tier 'gold'; expected one of public, dev, hidden, standard"):
        tier_rules("gold")


def test_a_server_run_artifact_sent_to_hidden_runs_on_every_blind_tier():
    from harness.tiers import Kind, run_tiers

    for kind in (Kind.container, Kind.script):
        assert run_tiers("hidden", kind) == ("hidden", "public", "dev")
    assert run_tiers("public", Kind.hdf5) == ("public",)
    assert run_tiers("standard", Kind.hdf5) == ("standard",)


def test_public_and_dev_take_images_only_as_the_servers_runs():
    from harness.tiers import TIER_RULES, Kind

    for tier in ("public", "dev"):
        assert not TIER_RULES[tier].takes(Kind.container)
        assert TIER_RULES[tier].takes(Kind.container, server_run=True)
        assert TIER_RULES[tier].takes(Kind.hdf5)
    assert not TIER_RULES["standard"].takes(Kind.container, server_run=True)  # not a blind tier
    assert not TIER_RULES["hidden"].takes(Kind.hdf5, server_run=True)
