"""The moving figure: body proportions, where each joint and prop is in a pose, and the
loop of frames between the program file's key poses with their holds."""

from __future__ import annotations

import math
from dataclasses import dataclass, replace

import numpy as np

from conversations.i18n import N_, _
from conversations.program.data import Demo, Dose, Leg, Pose

FPS = 12

# Body proportions, in body heights.
TRUNK, THIGH, SHANK, FOOT, HEEL = 0.30, 0.245, 0.245, 0.125, 0.035
UPPER_ARM, FOREARM = 0.165, 0.16
NECK, HEAD_R = 0.095, 0.062
TRUNK_R, LIMB_R, ARM_R = 0.058, 0.036, 0.026
ROLLER_R, BALL_R = 0.06, 0.05

COLOURS = {
    "body": "#2f4b7c",
    "working": "#f28c28",
    "other": "#9fb3c8",
    "floor": "#8c8c8c",
    "mat": "#d9e6df",
    "foam_roller": "#1f9e89",
    "ball": "#d7263d",
    "wall": "#b8ad9a",
    "chair": "#8d5b3a",
    "text": "#1d1d1d",
    "dose": "#b35c00",
    "detail_bg": "#f4f4f4",
    "guide": "#2e7d32",
}
BACKGROUND = "#ffffff"


def _hex(colour: str) -> tuple[int, int, int]:
    return (int(colour[1:3], 16), int(colour[3:5], 16), int(colour[5:7], 16))


RGB = {name: _hex(value) for name, value in COLOURS.items()}


# --- the figure's geometry --------------------------------------------------------------------
def _unit(deg: float) -> np.ndarray:
    """A direction given clockwise from straight up (90 is right, the way the figure faces)."""
    rad = math.radians(deg)
    return np.array([math.sin(rad), math.cos(rad)])


@dataclass(frozen=True)
class Body:
    """Joint positions of one pose, before it is placed in the picture (pelvis at 0, 0)."""

    points: dict[str, np.ndarray]

    def moved(self, offset: np.ndarray) -> Body:
        return Body({k: v + offset for k, v in self.points.items()})


def _leg(prefix: str, trunk: float, leg: Leg, pelvis: np.ndarray, foot_len: float
         ) -> dict[str, np.ndarray]:
    thigh = trunk + 180 - leg.hip
    shank = thigh + leg.knee
    foot = shank - 90 - leg.ankle
    knee = pelvis + THIGH * _unit(thigh)
    ankle = knee + SHANK * _unit(shank)
    return {f"{prefix}_knee": knee, f"{prefix}_ankle": ankle,
            f"{prefix}_heel": ankle - HEEL * _unit(foot),
            f"{prefix}_toe": ankle + foot_len * _unit(foot)}


def body(pose: Pose, view: str = "side") -> Body:
    pelvis = np.zeros(2)
    shoulder = pelvis + TRUNK * _unit(pose.trunk)
    # The neck bends where the trunk tips head-down (a bridge): the head stays level.
    neck = pose.trunk if -90 <= pose.trunk <= 90 else math.copysign(90, pose.trunk)
    upper = pose.trunk + 180 - pose.arm.shoulder
    # Lying on the side seen from the front, the feet point at the viewer: drawn short.
    foot = FOOT * (0.45 if view == "front" else 1.0)
    elbow = shoulder + UPPER_ARM * _unit(upper)
    points = {"pelvis": pelvis, "shoulder": shoulder, "head": shoulder + NECK * _unit(neck),
              "elbow": elbow, "hand": elbow + FOREARM * _unit(upper - pose.arm.elbow),
              **_leg("w", pose.trunk, pose.working, pelvis, foot),
              **_leg("o", pose.trunk, pose.other, pelvis, foot)}
    return Body(points)


def _radius(name: str) -> float:
    return {"pelvis": TRUNK_R, "shoulder": TRUNK_R, "head": HEAD_R}.get(name, LIMB_R)


def _lowest(b: Body) -> float:
    return min(p[1] - _radius(name) for name, p in b.points.items())


def _roller_centre(b: Body, along: float) -> np.ndarray:
    """Under the working thigh, `along` of the way from hip to knee, on the floor side."""
    hip, knee = b.points["pelvis"], b.points["w_knee"]
    at = hip + (knee - hip) * (0.15 + 0.7 * along)
    d = (knee - hip) / np.linalg.norm(knee - hip)
    normal = np.array([d[1], -d[0]])
    if normal[1] > 0:
        normal = -normal
    return at + normal * (LIMB_R + ROLLER_R)


def place(demo: Demo, pose: Pose) -> tuple[Body, dict[str, np.ndarray]]:
    """The pose placed in the picture: resting on the floor (the roller, if any, on it too)
    and held at the demo's anchor, so a stance foot or a back against the wall stays put."""
    b = body(pose, demo.view)
    props: dict[str, np.ndarray] = {}
    lowest = _lowest(b)
    if "foam_roller" in demo.props:
        roller = _roller_centre(b, pose.along)
        lowest = min(lowest, roller[1] - ROLLER_R)
    if demo.anchor == "other_foot":  # standing on it: the stance foot is on the floor
        lowest = min(b.points[k][1] for k in ("o_heel", "o_toe", "o_ankle")) - LIMB_R
    if demo.view == "above":  # seen from the ceiling: nothing rests on the picture's floor
        lowest = min(p[1] for p in b.points.values()) - 0.25
    dx = {
        "pelvis": 0.0,
        "other_foot": -b.points["o_ankle"][0],
        "shoulders": -b.points["shoulder"][0],
        "roller": -_roller_centre(b, pose.along)[0] if "foam_roller" in demo.props else 0.0,
        "wall": -min(b.points["pelvis"][0], b.points["shoulder"][0]) + TRUNK_R,
    }[demo.anchor]
    b = b.moved(np.array([dx, -lowest]))
    if "foam_roller" in demo.props:
        props["foam_roller"] = _roller_centre(b, pose.along)
    if "ball" in demo.props:
        props["ball"] = (b.points["w_knee"] + b.points["o_knee"]) / 2
    return b, props


# --- timing -----------------------------------------------------------------------------------
def _ease(t: float) -> float:
    return 0.5 - 0.5 * math.cos(math.pi * t)


def _mix(a: float, b: float, t: float) -> float:
    return a + (b - a) * t


def _blend(a: Pose, b: Pose, t: float) -> Pose:
    def leg(x: Leg, y: Leg) -> Leg:
        return Leg(hip=_mix(x.hip, y.hip, t), knee=_mix(x.knee, y.knee, t),
                   ankle=_mix(x.ankle, y.ankle, t), turn_out=_mix(x.turn_out, y.turn_out, t))
    return b.model_copy(update={
        "trunk": _mix(a.trunk, b.trunk, t), "working": leg(a.working, b.working),
        "other": leg(a.other, b.other), "along": _mix(a.along, b.along, t),
        "arm": b.arm.model_copy(update={"shoulder": _mix(a.arm.shoulder, b.arm.shoulder, t),
                                        "elbow": _mix(a.arm.elbow, b.arm.elbow, t)})})


def hold_seconds(pose: Pose, dose: Dose | None) -> float:
    if pose.hold != "dose":
        return pose.hold
    if dose is not None and dose.hold_seconds:
        return float(dose.hold_seconds)
    if dose is not None and dose.seconds and dose.reps is None:  # a timed hold: a stretch
        return float(dose.seconds)
    return 1.0


# The shipped program's phase names, so the catalog carries them; a clinic's own pose names
# are drawn as its program file writes them.
PHASES = (N_("slowly back to the hip"), N_("roll towards the knee"), N_("let go slowly"),
          N_("bend the knee"), N_("heel to buttock"), N_("slide up"),
          N_("slide down, squeeze"), N_("lower slowly"), N_("lift, leg straight"),
          N_("lower with control"), N_("straighten"), N_("stand up"), N_("sit back and down"),
          N_("lift, heel leading"), N_("close slowly"), N_("open the knee"),
          N_("lift the hips"))


@dataclass(frozen=True)
class Frame:
    pose: Pose
    ms: int
    label: str  # what the patient reads under the figure: the phase, or the hold's countdown
    effort: float  # 0 at the first pose, 1 at the pose furthest from it


def _distance(a: Pose, b: Pose) -> float:
    pairs = [(a.trunk, b.trunk), (a.along * 90, b.along * 90)] + [
        (getattr(getattr(a, leg), j), getattr(getattr(b, leg), j))
        for leg in ("working", "other") for j in ("hip", "knee", "ankle", "turn_out")]
    return math.sqrt(sum((x - y) ** 2 for x, y in pairs))


def frames(demo: Demo, dose: Dose | None) -> list[Frame]:
    """The loop: from each pose to the next (the last back to the first), then its hold."""
    poses = list(demo.poses)
    far = max(_distance(poses[0], p) for p in poses) or 1.0
    out: list[Frame] = []
    # From the first pose to the next ..., and back to the first: the loop closes there.
    for n in [*range(1, len(poses)), 0]:
        pose, previous = poses[n], poses[n - 1]
        steps = round(pose.move * FPS)
        for i in range(1, steps + 1):
            p = _blend(previous, pose, _ease(i / steps))
            out.append(Frame(p, round(1000 / FPS), _(pose.name), _distance(poses[0], p) / far))
        hold = hold_seconds(pose, dose)
        whole = int(hold)
        effort = _distance(poses[0], pose) / far
        if hold >= 2 and whole == hold:  # a countdown, one frame a second
            out.extend(Frame(pose, 1000, _("hold {seconds} s", seconds=whole - i), effort)
                       for i in range(whole))
        elif hold > 0 and out and steps:  # the pose's last frame, shown longer
            out[-1] = replace(out[-1], ms=out[-1].ms + round(hold * 1000))
        elif hold > 0:
            out.append(Frame(pose, round(hold * 1000), _(pose.name), effort))
    return out


