"""Pure helpers of the camera control layer: ranges, scaling, speed normalisation,
validation, and reading raw SOAP XML when a camera's answer does not fit the schema.

No I/O and no zeep here: values in, values out, `agent.errors` raised.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from typing import Any

from agent.camera.models import ContinuousMove, PtzMove, PtzZoom, Range
from agent.errors import InvalidArgument

#: Fraction of an axis' absolute range that one step (1..10) moves.
STEP_FRACTION = 0.02
#: Steps accepted by a step move.
STEP_RANGE = (1, 10)
#: Longest user password the API accepts (the camera may allow more).
MAX_PASSWORD = 16
#: Longest preset name accepted.
MAX_PRESET_NAME = 64

#: Pan (x) and tilt (y) signs of each step direction.
DIRECTIONS: dict[PtzMove, tuple[int, int]] = {
    PtzMove.UP: (0, 1),
    PtzMove.DOWN: (0, -1),
    PtzMove.LEFT: (-1, 0),
    PtzMove.RIGHT: (1, 0),
    PtzMove.LEFT_UP: (-1, 1),
    PtzMove.LEFT_DOWN: (-1, -1),
    PtzMove.RIGHT_UP: (1, 1),
    PtzMove.RIGHT_DOWN: (1, -1),
}
ZOOM_SIGN: dict[PtzZoom, int] = {PtzZoom.ZOOM_IN: 1, PtzZoom.ZOOM_OUT: -1}


def check_number(name: str, value: float) -> float:
    """A finite number, else InvalidArgument."""
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise InvalidArgument(f"{name} must be a finite number")
    return float(value)


def check_in_range(name: str, value: float, rng: Range) -> float:
    """`value` if it lies within the camera's own range, else InvalidArgument."""
    value = check_number(name, value)
    if not rng.contains(value):
        raise InvalidArgument(
            f"{name} {value:g} is outside the camera's range [{rng.min_val:g}, {rng.max_val:g}]"
        )
    return value


def check_mode(name: str, mode: str, supported: tuple[str, ...]) -> str:
    """`mode` (case-insensitive) as the camera spells it, if the camera supports it."""
    for known in supported:
        if known.upper() == mode.upper():
            return known
    raise InvalidArgument(f"{name} mode {mode!r} is not supported (one of {', '.join(supported)})")


def check_password(password: str) -> str:
    if not 0 < len(password) <= MAX_PASSWORD:
        raise InvalidArgument(f"passwords are 1..{MAX_PASSWORD} characters")
    if not password.isprintable() or not password.isascii():
        raise InvalidArgument("passwords are printable ASCII characters")
    return password


def check_preset_name(name: str) -> str:
    name = name.strip()
    if not 0 < len(name) <= MAX_PRESET_NAME or not name.isprintable():
        raise InvalidArgument(f"preset names are 1..{MAX_PRESET_NAME} printable characters")
    return name


def check_step(step: int) -> int:
    lo, hi = STEP_RANGE
    if isinstance(step, bool) or not isinstance(step, int) or not lo <= step <= hi:
        raise InvalidArgument(f"step must be an integer within {lo}..{hi}")
    return step


def span(rng: Range) -> float:
    return rng.max_val - rng.min_val


def to_space(fraction: float, rng: Range) -> float:
    """A signed fraction -1..1 of full scale as a value of a camera space.

    Positive fractions scale toward the space's maximum, negative toward its minimum, so
    asymmetric spaces keep 0 at 0 when they contain it.
    """
    fraction = max(-1.0, min(1.0, fraction))
    if rng.min_val < 0 < rng.max_val or rng.min_val == 0 or rng.max_val == 0:
        return fraction * (rng.max_val if fraction >= 0 else -rng.min_val)
    mid = (rng.min_val + rng.max_val) / 2  # a space not containing 0: map around its middle
    return mid + fraction * span(rng) / 2


def step_translation(step: int, sign: int, position: Range | None, translation: Range) -> float:
    """Relative move of `step` steps along an axis, in the translation space's units.

    One step is STEP_FRACTION of the absolute range when `position` is a space of the same
    family as the translation (degrees stay degrees, generic stays generic); without one, of
    half the translation range (its largest move one way). A move the translation space
    cannot hold is refused with its range, never clamped.
    """
    check_step(step)
    reference = span(position) if position is not None else span(translation) / 2
    amount = sign * step * STEP_FRACTION * reference
    if not translation.contains(amount):
        raise InvalidArgument(
            f"a move of {step} step(s) is {amount:g}, outside the camera's relative range "
            f"[{translation.min_val:g}, {translation.max_val:g}]"
        )
    return amount


def speed_fractions(move: ContinuousMove) -> tuple[float, float, float]:
    """Pan, tilt and zoom fractions -1..1 of a 0..100-per-direction move."""
    values = {
        "up": move.up,
        "down": move.down,
        "left": move.left,
        "right": move.right,
        "zoom_in": move.zoom_in,
        "zoom_out": move.zoom_out,
    }
    for name, value in values.items():
        if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= 100:
            raise InvalidArgument(f"{name} speed must be an integer within 0..100")
    return (
        (move.right - move.left) / 100.0,
        (move.up - move.down) / 100.0,
        (move.zoom_in - move.zoom_out) / 100.0,
    )


# ---------------------------------------------------------------------------- zeep objects


def get(obj: Any, *path: str, default: Any = None) -> Any:
    """Follow attribute or key names through a zeep object or dict; None-safe."""
    for name in path:
        if obj is None:
            return default
        if isinstance(obj, dict):
            obj = obj.get(name)
        else:
            try:
                obj = getattr(obj, name, None)
            except (AttributeError, KeyError, TypeError):
                obj = None
    return default if obj is None else obj


def as_float(value: Any) -> float | None:
    try:
        result = float(value)
    except (TypeError, ValueError):
        return None
    return result if math.isfinite(result) else None


def as_int(value: Any) -> int | None:
    number = as_float(value)
    return None if number is None else round(number)


def range_of(obj: Any, *path: str) -> Range | None:
    """A Range from an element with Min and Max children, None when incomplete."""
    node = get(obj, *path)
    lo, hi = as_float(get(node, "Min")), as_float(get(node, "Max"))
    if lo is None or hi is None or lo > hi:
        return None
    return Range(lo, hi)


def space_range(space: Any, axis: str = "XRange") -> Range | None:
    return range_of(space, axis)


def as_list(value: Any) -> list[Any]:
    if value is None:
        return []
    if isinstance(value, list | tuple):
        return list(value)
    return [value]


def modes(value: Any) -> tuple[str, ...]:
    return tuple(str(v) for v in as_list(value) if v is not None)


# ---------------------------------------------------------------------------- raw XML


def local(tag: Any) -> str:
    return str(tag).rpartition("}")[2] if isinstance(tag, str) else ""


def raw_children(elem: Any, name: str) -> list[Any]:
    """Child elements of `elem` with local name `name`, whatever their namespace."""
    if elem is None:
        return []
    return [c for c in elem if local(c.tag) == name]


def raw_child(elem: Any, *path: str) -> Any:
    for name in path:
        found = raw_children(elem, name)
        if not found:
            return None
        elem = found[0]
    return elem


def raw_text(elem: Any, *path: str) -> str | None:
    node = raw_child(elem, *path)
    if node is None:
        return None
    return (node.text or "").strip()


def raw_find_all(root: Any, name: str) -> Iterator[Any]:
    """Every element below `root` with local name `name`, in document order."""
    if root is None:
        return
    for elem in root.iter():
        if local(elem.tag) == name:
            yield elem


def raw_body(root: Any) -> Any:
    """The first child of the SOAP Body (the operation's response element)."""
    body = next(raw_find_all(root, "Body"), None)
    if body is None or len(body) == 0:
        return None
    return body[0]


def raw_field(root: Any, name: str) -> str | None:
    """Text of the first element named `name` anywhere in the response body."""
    node = next(raw_find_all(raw_body(root), name), None)
    return None if node is None else (node.text or "").strip()


def raw_tree(elem: Any) -> Any:
    """A raw element as nested dicts keyed by local name (attributes too), repeated children
    as lists, leaves as their text: readable by `get` like zeep's objects."""
    if elem is None:
        return None
    if len(elem) == 0:
        text = (elem.text or "").strip()
        if not elem.attrib:
            return text
        return {**{local(k): v for k, v in elem.attrib.items()}, "_value_1": text}
    out: dict[str, Any] = {local(k): v for k, v in elem.attrib.items()}
    for child in elem:
        name, value = local(child.tag), raw_tree(child)
        if not name:
            continue
        if name in out:
            previous = out[name]
            out[name] = [*previous, value] if isinstance(previous, list) else [previous, value]
        else:
            out[name] = value
    return out


def leaf_count(value: Any) -> int:
    """How many leaf values a serialised answer (or `raw_tree`) holds."""
    if isinstance(value, dict):
        return sum(leaf_count(v) for k, v in value.items() if not str(k).startswith("_"))
    if isinstance(value, list | tuple):
        return sum(leaf_count(v) for v in value)
    return 0 if value is None else 1


def as_bool(value: Any) -> bool | None:
    """An xs:boolean from zeep (bool) or raw XML text ("true", "1", "false", "0")."""
    if isinstance(value, bool):
        return value
    text = str(value).strip().lower() if value is not None else ""
    return {"true": True, "1": True, "false": False, "0": False}.get(text)


def richer(answer: Any, serialized: Any, raw_elem: Any) -> Any:
    """zeep's `answer`, or the raw element's `raw_tree` when that holds more values: a camera
    that sends elements out of order or extra ones makes zeep drop the rest of the answer."""
    tree = raw_tree(raw_elem)
    if tree is not None and leaf_count(tree) > leaf_count(serialized):
        return tree
    return answer
