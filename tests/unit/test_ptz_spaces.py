"""PTZ spaces are chosen by URI, not by the order a camera lists them, and a step is sized
in the units of the translation space it is sent in.

The node is the real Pelco D6230L GetNodes capture (tests/fixtures/onvif), read by zeep with
the ONVIF WSDL, as listed and with its spaces reordered or removed the way other firmwares
list them.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
from lxml import etree

from agent.camera.models import Range
from agent.camera.ptz import parse_node, space_family
from agent.camera.quirks import STEP_FRACTION, local, raw_find_all, step_translation
from agent.errors import InvalidArgument
from tests.unit.test_onvif_captures import FIXTURES, _binding

PT = "http://www.onvif.org/ver10/tptz/PanTiltSpaces/"
CONFIG = {"DefaultPTZSpeed": {"PanTilt": {"x": 1.0, "y": 1.0}}}


def _node(edit: Callable[[Any], None] | None = None) -> Any:
    """The Pelco node, after `edit` changed its raw XML."""
    envelope = etree.fromstring((FIXTURES / "pelco-d6230l" / "GetNodes.xml").read_bytes())
    if edit is not None:
        edit(next(raw_find_all(envelope, "SupportedPTZSpaces")))
    return _binding("ptz")._operations["GetNodes"].process_reply(envelope)[0]


def _uri(space: Any) -> str:
    return next((c.text or "") for c in space if local(c.tag) == "URI")


def _spherical_first(spaces: Any) -> None:
    """Position spaces listed Spherical (degrees) first, as some firmwares do."""
    positions = [s for s in spaces if local(s.tag) == "AbsolutePanTiltPositionSpace"]
    generic = next(s for s in positions if _uri(s).endswith("PositionGenericSpace"))
    spaces.remove(generic)
    index = list(spaces).index(positions[-1] if positions[-1] is not generic else positions[0])
    spaces.insert(index + 1, generic)


def _drop(*suffixes: str) -> Callable[[Any], None]:
    def edit(spaces: Any) -> None:
        for s in list(spaces):
            if any(_uri(s).endswith(x) for x in suffixes):
                spaces.remove(s)

    return edit


def test_generic_translation_chosen_though_listed_after_degrees() -> None:
    node = parse_node("0", _node(), CONFIG)
    assert node.rel_pan_tilt is not None and node.abs_pan_tilt is not None
    assert node.rel_pan_tilt.uri == PT + "TranslationGenericSpace"
    assert node.abs_pan_tilt.uri == PT + "PositionGenericSpace"


@pytest.mark.parametrize("edit", [None, _spherical_first], ids=["as-listed", "spherical-first"])
def test_a_step_is_a_small_generic_move_whatever_the_order(
    edit: Callable[[Any], None] | None,
) -> None:
    node = parse_node("0", _node(edit), CONFIG)
    pos, rel = node.abs_pan_tilt, node.rel_pan_tilt
    assert pos is not None and rel is not None
    assert space_family(pos.uri) == space_family(rel.uri) == "generic"
    # One step: 2 % of the -1..1 range, not 2 % of 360 degrees clamped to 1.0.
    assert step_translation(1, 1, pos.x, rel.x) == pytest.approx(STEP_FRACTION * 2)


def test_degree_translation_pairs_with_the_degree_position_space() -> None:
    node = parse_node("0", _node(_drop("PositionGenericSpace")), CONFIG)
    assert node.abs_pan_tilt is not None and node.rel_pan_tilt is not None
    assert node.abs_pan_tilt.uri == PT + "SphericalPositionSpaceDegrees"
    assert node.rel_pan_tilt.uri == PT + "SphericalTranslationSpaceDegrees"
    span = node.abs_pan_tilt.x.max_val - node.abs_pan_tilt.x.min_val
    step = step_translation(1, 1, node.abs_pan_tilt.x, node.rel_pan_tilt.x)
    assert step == pytest.approx(STEP_FRACTION * span)


def test_a_translation_of_another_family_is_sized_by_its_own_range() -> None:
    node = parse_node(
        "0",
        _node(_drop("PositionGenericSpace", "TranslationGenericSpace", "SpaceDegrees")),
        CONFIG,
    )
    assert node.abs_pan_tilt is None or node.rel_pan_tilt is not None
    assert node.rel_pan_tilt is not None
    assert space_family(node.rel_pan_tilt.uri) is None  # the vendor's PercentFOVSpace
    rel = node.rel_pan_tilt.x
    assert step_translation(2, -1, None, rel) == pytest.approx(
        -2 * STEP_FRACTION * (rel.max_val - rel.min_val) / 2
    )


def test_a_move_out_of_the_translation_range_is_refused_not_clamped() -> None:
    with pytest.raises(InvalidArgument, match=r"\[-1, 1\]"):
        step_translation(10, 1, Range(-180.0, 180.0), Range(-1.0, 1.0))
