"""PTZ over the ONVIF PTZ (ver20) service, in the camera's own spaces.

Every value is scaled through the spaces the camera announces (GetNode), so generic
(-1..1) and degree (-180..180) cameras move the same. Cameras that ignore speed or never
end a move get an explicit Stop after every step move and a safety Stop after every
continuous move; a SetPreset refused while moving is retried once after the camera stops.
"""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from agent.camera.media import profiles
from agent.camera.models import ContinuousMove, PtzInfo, PtzMove, PtzZoom, Range
from agent.camera.quirks import (
    DIRECTIONS,
    ZOOM_SIGN,
    as_bool,
    as_float,
    as_int,
    as_list,
    check_preset_name,
    check_step,
    get,
    raw_body,
    raw_children,
    raw_tree,
    richer,
    space_range,
    span,
    speed_fractions,
    step_translation,
    to_space,
)
from agent.camera.session import OnvifSession, serialize
from agent.errors import InvalidArgument, NotApplied, ProtocolError, Unsupported

log = logging.getLogger(__name__)

#: Seconds after which a continuous move is stopped unless a new command arrives.
SAFETY_STOP_AFTER = 5.0
#: Longest wait for a step move, preset or home move to reach IDLE before Stop, seconds.
SETTLE_TIMEOUT = 5.0
#: Interval between two GetStatus polls while waiting for IDLE, seconds.
POLL_INTERVAL = 0.1
#: Largest distance, as a fraction of an axis' range, between the position a home was saved
#: at and the position GotoHomePosition reaches for the home to count as saved.
HOME_TOLERANCE = 0.01
#: Seconds of full-speed continuous move per step when RelativeMove is unavailable.
STEP_PULSE = 0.05


@dataclass(frozen=True)
class Space:
    uri: str
    x: Range
    y: Range | None = None


@dataclass(frozen=True)
class PtzNode:
    """The spaces and limits of the camera's PTZ node, for one profile."""

    profile_token: str
    abs_pan_tilt: Space | None
    abs_zoom: Space | None
    rel_pan_tilt: Space | None
    rel_zoom: Space | None
    vel_pan_tilt: Space | None
    vel_zoom: Space | None
    max_presets: int
    home_supported: bool
    default_speed: tuple[float, float] | None
    default_zoom_speed: float | None


#: ONVIF space URI prefixes (PTZ spec, "Standardized PTZ coordinate systems").
PAN_TILT_SPACES = "http://www.onvif.org/ver10/tptz/PanTiltSpaces/"
ZOOM_SPACES = "http://www.onvif.org/ver10/tptz/ZoomSpaces/"

#: Space families by the last segment of a known URI: spaces of one family share units,
#: so a translation may be sized from a position range of the same family only.
#: `generic`: -1..1 normalised (the camera may announce other bounds); `degrees`: spherical
#: degrees; `fov`: a fraction of the field of view (no position space matches it);
#: `speed`: the speed spaces of DefaultPTZSpeed.
_FAMILIES = {
    "PositionGenericSpace": "generic",
    "TranslationGenericSpace": "generic",
    "VelocityGenericSpace": "generic",
    "SphericalPositionSpaceDegrees": "degrees",
    "SphericalTranslationSpaceDegrees": "degrees",
    "VelocitySpaceDegrees": "degrees",
    "TranslationSpaceFov": "fov",
    "GenericSpeedSpace": "speed",
    "ZoomGenericSpeedSpace": "speed",
}
#: Preference among the spaces of one kind: generic first, then degrees, then the rest.
_PREFERENCE = ("generic", "degrees")


def space_family(uri: str) -> str | None:
    """The family of a standard ONVIF space URI (see _FAMILIES); None for vendor spaces."""
    if not uri.startswith((PAN_TILT_SPACES, ZOOM_SPACES)):
        return None
    return _FAMILIES.get(uri.rpartition("/")[2])


def _spaces(spaces: Any, name: str) -> list[Space]:
    out = []
    for item in as_list(get(spaces, name)):
        x = space_range(item, "XRange")
        uri = get(item, "URI")
        if x is not None and uri:
            out.append(Space(str(uri), x, space_range(item, "YRange")))
    return out


def _rank(space: Space, family: str | None) -> int:
    """Lower is better: the wanted family, then generic, then degrees, then listed order."""
    found = space_family(space.uri)
    if family is not None and found == family:
        return 0
    if found in _PREFERENCE:
        return 1 + _PREFERENCE.index(found)
    return len(_PREFERENCE) + 1


def _space(spaces: Any, name: str, family: str | None = None) -> Space | None:
    """The space of kind `name` to use, by URI rather than by listed order (sort is stable)."""
    found = sorted(_spaces(spaces, name), key=lambda s: _rank(s, family))
    return found[0] if found else None


def _family_of(space: Space | None) -> str | None:
    return None if space is None else space_family(space.uri)


def parse_node(profile_token: str, node: Any, config: Any) -> PtzNode:
    spaces = get(node, "SupportedPTZSpaces")
    speed = get(config, "DefaultPTZSpeed")
    sx, sy = as_float(get(speed, "PanTilt", "x")), as_float(get(speed, "PanTilt", "y"))
    abs_pan_tilt = _space(spaces, "AbsolutePanTiltPositionSpace")
    abs_zoom = _space(spaces, "AbsoluteZoomPositionSpace")
    return PtzNode(
        profile_token=profile_token,
        abs_pan_tilt=abs_pan_tilt,
        abs_zoom=abs_zoom,
        # Translations in the position space's family, so a step is sized in its units.
        rel_pan_tilt=_space(spaces, "RelativePanTiltTranslationSpace", _family_of(abs_pan_tilt)),
        rel_zoom=_space(spaces, "RelativeZoomTranslationSpace", _family_of(abs_zoom)),
        vel_pan_tilt=_space(spaces, "ContinuousPanTiltVelocitySpace"),
        vel_zoom=_space(spaces, "ContinuousZoomVelocitySpace"),
        max_presets=as_int(get(node, "MaximumNumberOfPresets")) or 0,
        home_supported=bool(as_bool(get(node, "HomeSupported"))),
        default_speed=None if sx is None or sy is None else (sx, sy),
        default_zoom_speed=as_float(get(speed, "Zoom", "x")),
    )


class PtzControl:
    """PTZ commands for one camera; owns the safety-stop timer of continuous moves."""

    def __init__(self, session: OnvifSession) -> None:
        self._session = session
        self._node: PtzNode | None = None
        self._safety: asyncio.Task[None] | None = None

    async def close(self) -> None:
        await self._disarm()

    async def node(self) -> PtzNode:
        if self._node is None:
            s = self._session
            s.require("ptz")
            found = await profiles(s)
            prof = next((p for p in found if p.ptz), found[0] if found else None)
            if prof is None:
                raise Unsupported("the camera has no media profile for PTZ")
            configs = await _listed(s, "GetConfigurations", "PTZConfiguration")
            config = configs[0] if configs else None
            node_token = get(config, "NodeToken")
            nodes = await _listed(s, "GetNodes", "PTZNode")
            node = next((n for n in nodes if get(n, "token") == node_token), None)
            if node is None and nodes:
                node = nodes[0]
            if node is None:
                raise Unsupported("the camera announces no PTZ node")
            self._node = parse_node(prof.token, node, config)
        return self._node

    async def _call(self, operation: str, params: dict[str, Any] | None = None) -> Any:
        node = await self.node()
        return await self._session.call(
            "ptz", operation, {"ProfileToken": node.profile_token, **(params or {})}
        )

    async def status(self) -> Any:
        return await self._call("GetStatus")

    async def info(self) -> PtzInfo:
        node = await self.node()
        if node.abs_pan_tilt is None or node.abs_pan_tilt.y is None:
            raise Unsupported("the camera announces no absolute pan/tilt space")
        st = await self.status()
        x, y = (
            as_float(get(st, "Position", "PanTilt", "x")),
            as_float(get(st, "Position", "PanTilt", "y")),
        )
        return PtzInfo(
            position=None if x is None or y is None else (x, y),
            zoom_position=as_float(get(st, "Position", "Zoom", "x")),
            pan_range=node.abs_pan_tilt.x,
            tilt_range=node.abs_pan_tilt.y,
            zoom_range=node.abs_zoom.x if node.abs_zoom else None,
            default_speed=node.default_speed,
            default_zoom_speed=node.default_zoom_speed,
            max_num_of_presets=node.max_presets,
            home_supported=node.home_supported,
        )

    async def wait_idle(self, timeout: float = SETTLE_TIMEOUT) -> bool:
        """Poll GetStatus until pan/tilt and zoom are IDLE; False when `timeout` ran out."""
        deadline = time.monotonic() + timeout
        while True:
            if not _moving(await self.status()):
                return True
            if time.monotonic() >= deadline:
                return False
            await asyncio.sleep(POLL_INTERVAL)

    async def stop(self) -> None:
        await self._disarm()
        await self._call("Stop", {"PanTilt": True, "Zoom": True})

    async def step(self, move: PtzMove | None, zoom: PtzZoom | None, step: int) -> None:
        """Move one step of 1..10 (STEP_FRACTION of the range each), then Stop."""
        check_step(step)
        if move is None and zoom is None:
            raise InvalidArgument("give a move direction, a zoom direction or both")
        await self._disarm()
        node = await self.node()
        try:
            await self._relative_step(node, move, zoom, step)
        except Unsupported:
            log.debug("RelativeMove unavailable, stepping by continuous move")
            await self._continuous_step(node, move, zoom, step)
        await self._call("Stop", {"PanTilt": True, "Zoom": True})

    async def _relative_step(
        self, node: PtzNode, move: PtzMove | None, zoom: PtzZoom | None, step: int
    ) -> None:
        translation: dict[str, Any] = {}
        if move is not None:
            pos, rel = node.abs_pan_tilt, node.rel_pan_tilt
            if pos is None or rel is None or pos.y is None or rel.y is None:
                raise Unsupported("the camera announces no relative pan/tilt space")
            dx, dy = DIRECTIONS[move]
            same = _paired(pos, rel)
            translation["PanTilt"] = {
                "x": step_translation(step, dx, pos.x if same else None, rel.x),
                "y": step_translation(step, dy, pos.y if same else None, rel.y),
                "space": rel.uri,
            }
        if zoom is not None:
            zpos, zrel = node.abs_zoom, node.rel_zoom
            if zpos is None or zrel is None:
                raise Unsupported("the camera announces no relative zoom space")
            translation["Zoom"] = {
                "x": step_translation(
                    step, ZOOM_SIGN[zoom], zpos.x if _paired(zpos, zrel) else None, zrel.x
                ),
                "space": zrel.uri,
            }
        await self._call("RelativeMove", {"Translation": translation})
        if not await self.wait_idle():
            log.info("PTZ step move still running after %.0f s; stopping it", SETTLE_TIMEOUT)

    async def _continuous_step(
        self, node: PtzNode, move: PtzMove | None, zoom: PtzZoom | None, step: int
    ) -> None:
        dx, dy = DIRECTIONS[move] if move is not None else (0, 0)
        dz = ZOOM_SIGN[zoom] if zoom is not None else 0
        velocity = self._velocity(node, float(dx), float(dy), float(dz))
        duration = step * STEP_PULSE
        await self._call("ContinuousMove", {"Velocity": velocity, "Timeout": _duration(duration)})
        await asyncio.sleep(duration)

    def _velocity(self, node: PtzNode, x: float, y: float, z: float) -> dict[str, Any]:
        velocity: dict[str, Any] = {}
        if x or y:
            space = node.vel_pan_tilt
            if space is None or space.y is None:
                raise Unsupported("the camera announces no continuous pan/tilt space")
            velocity["PanTilt"] = {
                "x": to_space(x, space.x),
                "y": to_space(y, space.y),
                "space": space.uri,
            }
        if z:
            zspace = node.vel_zoom
            if zspace is None:
                raise Unsupported("the camera announces no continuous zoom space")
            velocity["Zoom"] = {"x": to_space(z, zspace.x), "space": zspace.uri}
        return velocity

    async def continuous(self, move: ContinuousMove) -> None:
        """Move at per-direction speeds 0..100 until stopped; all zero stops.

        A safety Stop follows SAFETY_STOP_AFTER seconds later unless a new command comes.
        """
        x, y, z = speed_fractions(move)
        if move.is_stop:
            await self.stop()
            return
        node = await self.node()
        velocity = self._velocity(node, x, y, z)
        await self._disarm()
        await self._call(
            "ContinuousMove", {"Velocity": velocity, "Timeout": _duration(SAFETY_STOP_AFTER)}
        )
        self._safety = asyncio.create_task(self._safety_stop(), name="ptz-safety-stop")

    async def _safety_stop(self) -> None:
        await asyncio.sleep(SAFETY_STOP_AFTER)
        try:
            await self._call("Stop", {"PanTilt": True, "Zoom": True})
        except Exception as exc:
            log.warning("PTZ safety stop failed: %s", exc)

    async def _disarm(self) -> None:
        task, self._safety = self._safety, None
        if task is not None and not task.done():
            task.cancel()
            await asyncio.wait([task])  # a cancellation of the caller itself goes through

    @property
    def safety_armed(self) -> bool:
        return self._safety is not None and not self._safety.done()

    # Home and presets.

    async def home_save(self) -> None:
        """SetHomePosition, verified: ONVIF has no read-back of the home position, so the
        camera is sent home and must stay where it was (within HOME_TOLERANCE of each axis'
        range). A camera that goes elsewhere kept an older home: it is moved back and
        NotApplied names where its home is. A camera that reports no position is trusted."""
        await self._require_home()
        await self._disarm()
        node = await self.node()
        before = _position(await self.status())
        await self._call("SetHomePosition")
        if before is None or node.abs_pan_tilt is None or node.abs_pan_tilt.y is None:
            return
        await self._call("GotoHomePosition")
        await self.wait_idle()
        after = _position(await self.status())
        ranges = (node.abs_pan_tilt.x, node.abs_pan_tilt.y)
        if after is None or all(
            abs(a - b) <= HOME_TOLERANCE * span(r)
            for a, b, r in zip(after, before, ranges, strict=True)
        ):
            return
        back = AbsoluteTarget(pan_tilt=before, zoom=None)
        await self._call("AbsoluteMove", {"Position": _absolute_position(node, back)})
        await self.wait_idle()
        raise NotApplied(
            "the camera accepted SetHomePosition but its home is still "
            f"pan {after[0]:g}, tilt {after[1]:g}",
            held={"pan": after[0], "tilt": after[1]},
        )

    async def home_apply(self) -> None:
        await self._require_home()
        await self._disarm()
        await self._call("GotoHomePosition")

    async def _require_home(self) -> None:
        if not (await self.node()).home_supported:
            raise Unsupported("the camera has no home position")

    async def _presets(self) -> list[tuple[str, str]]:
        """(token, name) of every preset, in the camera's order; a preset without a name is
        named by its token. Names need not be unique on cameras (tokens are)."""
        out: list[tuple[str, str]] = []
        for p in as_list(await self._call("GetPresets")):
            token = get(p, "token")
            if token is not None:
                out.append((str(token), str(get(p, "Name", default=token))))
        return out

    async def presets(self) -> list[str]:
        return [name for _token, name in await self._presets()]

    async def _token(self, name: str) -> str:
        """The token of the first preset named `name` (in the camera's order)."""
        name = check_preset_name(name)
        token = next((t for t, n in await self._presets() if n == name), None)
        if token is None:
            raise InvalidArgument(f"no preset named {name!r}")
        return token

    async def preset_create(self, name: str) -> None:
        name = check_preset_name(name)
        if any(n == name for _t, n in await self._presets()):
            raise InvalidArgument(f"a preset named {name!r} exists already")
        try:
            await self._call("SetPreset", {"PresetName": name})
        except ProtocolError as exc:
            if "MovingPTZ" not in str(exc):
                raise
            log.info("camera refused SetPreset while moving; stopping and retrying once")
            await self.stop()
            await self.wait_idle()
            await self._call("SetPreset", {"PresetName": name})

    async def preset_delete(self, name: str) -> None:
        await self._call("RemovePreset", {"PresetToken": await self._token(name)})

    async def preset_apply(self, name: str) -> None:
        token = await self._token(name)
        await self._disarm()
        await self._call("GotoPreset", {"PresetToken": token})

    # Absolute moves.

    async def absolute(self, x: float | None, y: float | None, zoom: float | None) -> None:
        """AbsoluteMove to pan `x`, tilt `y` and `zoom`, in the chosen position spaces (the
        `supported_range` info() reports); an omitted axis keeps the position GetStatus reports.
        A value outside the space is InvalidArgument naming the range, never clamped. Done only
        once the camera reports the target (within ABSOLUTE_TOLERANCE of each axis' range): a
        camera that holds still elsewhere is NotApplied naming where it is."""
        node = await self.node()
        check_absolute(node, x, y, zoom)
        await self._disarm()
        target = absolute_target(node, x, y, zoom, await self.status())
        await self._call("AbsoluteMove", {"Position": _absolute_position(node, target)})
        held = await self._reach(node, target)
        if held is None:
            return
        shown = ", ".join(f"{k} {v:g}" for k, v in held.items())
        raise NotApplied(f"the camera accepted AbsoluteMove but holds {shown}", held=dict(held))

    async def _reach(self, node: PtzNode, target: AbsoluteTarget) -> dict[str, float] | None:
        """Poll GetStatus until the camera is at `target`: None when it got there (or reports
        no position of the axes moved, after it is idle), else the position it holds once it
        stayed idle and still for ABSOLUTE_STALL seconds or ABSOLUTE_TIMEOUT ran out."""
        deadline = time.monotonic() + ABSOLUTE_TIMEOUT
        still_since = time.monotonic()
        last: dict[str, float] | None = None
        while True:
            st = await self.status()
            now = _axes(st)
            wanted = target.axes()
            if not any(k in now for k in wanted):
                log.info("the camera reports no PTZ position; trusting its AbsoluteMove")
                await self.wait_idle()
                return None
            if all(
                k not in now or abs(now[k] - v) <= _tolerance(node, k) for k, v in wanted.items()
            ):
                return None
            clock = time.monotonic()
            if _moving(st) or now != last:
                still_since = clock
            last = now
            if clock >= deadline or clock - still_since >= ABSOLUTE_STALL:
                return {k: now[k] for k in wanted if k in now}
            await asyncio.sleep(POLL_INTERVAL)


async def _listed(session: OnvifSession, operation: str, element: str) -> list[Any]:
    """A list answer of the PTZ service, each item from the raw XML where zeep lost values
    (elements out of order or extra ones, as media.py does for profiles)."""
    answer, raw = await session.call_raw("ptz", operation)
    items = as_list(answer)
    raws = raw_children(raw_body(raw), element)
    if len(raws) != len(items):
        return items if items else [raw_tree(r) for r in raws]
    return [richer(item, serialize(item), r) for item, r in zip(items, raws, strict=True)]


def _moving(status: Any) -> bool:
    """Whether GetStatus reports pan/tilt or zoom MOVING."""
    return any(
        str(get(status, "MoveStatus", k, default="IDLE")).upper() == "MOVING"
        for k in ("PanTilt", "Zoom")
    )


def _position(status: Any) -> tuple[float, float] | None:
    x = as_float(get(status, "Position", "PanTilt", "x"))
    y = as_float(get(status, "Position", "PanTilt", "y"))
    return None if x is None or y is None else (x, y)


def _paired(position: Space, translation: Space) -> bool:
    """Whether a translation may be sized from the position range: same known family."""
    family = space_family(translation.uri)
    return family is not None and family == space_family(position.uri)


def _duration(seconds: float) -> timedelta:
    return timedelta(seconds=seconds)


#: Largest distance, as a fraction of an axis' range, between the target of an absolute move
#: and the position the camera reports for the move to count as done.
ABSOLUTE_TOLERANCE = 0.01
#: Longest wait for an absolute move to reach its target, seconds.
ABSOLUTE_TIMEOUT = SETTLE_TIMEOUT
#: Seconds a camera may report IDLE and hold still away from the target before the move
#: counts as not applied (cameras may report IDLE a moment before they start to move).
ABSOLUTE_STALL = 1.0


@dataclass(frozen=True)
class AbsoluteTarget:
    """Where an absolute move goes, in the chosen position spaces; None leaves an axis out of
    the request (the camera keeps it)."""

    pan_tilt: tuple[float, float] | None
    zoom: float | None

    def axes(self) -> dict[str, float]:
        out = {}
        if self.pan_tilt is not None:
            out["x"], out["y"] = self.pan_tilt
        if self.zoom is not None:
            out["zoom"] = self.zoom
        return out


def _axis_ranges(node: PtzNode) -> dict[str, Range]:
    out = {}
    if node.abs_pan_tilt is not None and node.abs_pan_tilt.y is not None:
        out["x"], out["y"] = node.abs_pan_tilt.x, node.abs_pan_tilt.y
    if node.abs_zoom is not None:
        out["zoom"] = node.abs_zoom.x
    return out


def check_absolute(node: PtzNode, x: float | None, y: float | None, zoom: float | None) -> None:
    """InvalidArgument when no axis is given or a value lies outside the chosen position
    space (naming its range); Unsupported when the camera has no position space for an axis."""
    given = {k: v for k, v in (("x", x), ("y", y), ("zoom", zoom)) if v is not None}
    if not given:
        raise InvalidArgument("give x, y, zoom or several of them")
    ranges = _axis_ranges(node)
    if ("x" in given or "y" in given) and "x" not in ranges:
        raise Unsupported("the camera announces no absolute pan/tilt space")
    if "zoom" in given and "zoom" not in ranges:
        raise Unsupported("the camera announces no absolute zoom space")
    for name, value in given.items():
        rng = ranges[name]
        if not rng.contains(value):  # also refuses NaN
            raise InvalidArgument(
                f"{name} {value:g} is outside the camera's range {rng.min_val:g}..{rng.max_val:g}"
            )


def absolute_target(
    node: PtzNode, x: float | None, y: float | None, zoom: float | None, status: Any
) -> AbsoluteTarget:
    """The full target of an absolute move: the values given, each omitted axis at the
    position `status` (GetStatus) reports. Cameras need pan and tilt together, and some set
    an axis left out of the request to 0, so every axis the camera reports is sent."""
    check_absolute(node, x, y, zoom)
    ranges = _axis_ranges(node)
    now = {k: v for k, v in _axes(status).items() if k in ranges and ranges[k].contains(v)}
    pan, tilt = (x if x is not None else now.get("x")), (y if y is not None else now.get("y"))
    if (x is not None or y is not None) and (pan is None or tilt is None):
        raise InvalidArgument("the camera reports no pan/tilt position: give both x and y")
    return AbsoluteTarget(
        pan_tilt=None if pan is None or tilt is None else (pan, tilt),
        zoom=zoom if zoom is not None else now.get("zoom"),
    )


def _absolute_position(node: PtzNode, target: AbsoluteTarget) -> dict[str, Any]:
    position: dict[str, Any] = {}
    if target.pan_tilt is not None and node.abs_pan_tilt is not None:
        x, y = target.pan_tilt
        position["PanTilt"] = {"x": x, "y": y, "space": node.abs_pan_tilt.uri}
    if target.zoom is not None and node.abs_zoom is not None:
        position["Zoom"] = {"x": target.zoom, "space": node.abs_zoom.uri}
    return position


def _axes(status: Any) -> dict[str, float]:
    """The position GetStatus reports, by axis name (`x`, `y`, `zoom`); missing ones left out."""
    values = (
        ("x", as_float(get(status, "Position", "PanTilt", "x"))),
        ("y", as_float(get(status, "Position", "PanTilt", "y"))),
        ("zoom", as_float(get(status, "Position", "Zoom", "x"))),
    )
    return {k: v for k, v in values if v is not None}


def _tolerance(node: PtzNode, axis: str) -> float:
    """ABSOLUTE_TOLERANCE of the axis' range; a range of one value allows float noise only."""
    rng = _axis_ranges(node).get(axis)
    return 1e-6 if rng is None else max(ABSOLUTE_TOLERANCE * span(rng), 1e-6)
