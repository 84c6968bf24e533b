"""Point scores (CURB-65, NEWS2, CHA2DS2-VASc...): a sum of items, in three values.

Each item is either a condition worth some points, or a fact whose value falls
in a band worth some points. An item that cannot be decided contributes a range
(0 to its points, or its lowest to highest band), so the total is a range too.
A comparison of the total is decided when the whole range agrees (spec 0.4:
known inputs that force the result decide it); otherwise it cannot be
determined, naming the missing facts. A partial sum is never reported as the
score: the total is None until every item is known.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from . import ruleformat as rf
from .assessment import FactUsed, Score
from .caseview import CaseView
from .cutpoints import OPERATORS, compare_value, text_matches
from .decisions import decide_leaf
from .errors import UnitError
from .leaves import LeafResult, evaluate_leaf, value_for_band
from .memo import ByIdentity

__all__ = [
    "ItemResult",
    "PointResult",
    "Points",
    "evaluate_points",
    "points_leaf",
]


@dataclass
class ItemResult:
    """One item's points, or the range it could take."""

    id: str
    title: str
    points: float | None
    low: float
    high: float
    facts: list[FactUsed] = field(default_factory=list)
    missing: list[str] = field(default_factory=list)
    detail: str = ""


@dataclass
class PointResult:
    """A point score for one case."""

    score: rf.PointScore
    items: list[ItemResult]
    reported: bool = True

    @property
    def low(self) -> float:
        """The lowest total the known and unknown items allow."""
        return sum(i.low for i in self.items)

    @property
    def high(self) -> float:
        """The highest total the known and unknown items allow."""
        return sum(i.high for i in self.items)

    @property
    def total(self) -> float | None:
        """The score, or None while any item is unknown."""
        return self.low if self.low == self.high else None

    @property
    def missing(self) -> list[str]:
        """Facts whose absence keeps items unknown."""
        return sorted({m for i in self.items for m in i.missing})


def _band_points(view: CaseView, item: rf.PointItem) -> ItemResult:
    assert item.fact is not None and item.bands is not None
    title = item.title or item.id
    values = [b.points for b in item.bands]
    found = value_for_band(view, item)
    if found is None:
        return ItemResult(
            item.id,
            title,
            None,
            min(values),
            max(values),
            missing=[item.fact],
            detail=f"no {item.fact}",
        )
    value, unit, used = found
    for band in item.bands:
        if _in_band(view, item, band, value, unit):
            shown = f"{value:g} {unit}" if isinstance(value, float) else str(value)
            return ItemResult(
                item.id,
                title,
                band.points,
                band.points,
                band.points,
                facts=[used],
                detail=f"{item.fact} {shown}",
            )
    # A value outside every band is a gap in the rule file, not a zero.
    return ItemResult(
        item.id,
        title,
        None,
        min(values),
        max(values),
        facts=[used],
        missing=[f"{item.fact} (outside every band)"],
        detail=f"{item.fact} outside every band",
    )


def _in_band(
    view: CaseView, item: rf.PointItem, band: rf.Band, value: float | str, unit: str
) -> bool:
    if isinstance(value, str):
        return text_matches(value, band.equals, band.one_of)
    fact = view.catalogue.quantities[item.fact or ""]
    return compare_value(value, unit, _band_condition(item, band), fact)[0]


_bands: ByIdentity[rf.Band, rf.FactComparison] = ByIdentity()


def _band_condition(item: rf.PointItem, band: rf.Band) -> rf.FactComparison:
    """A band's cut points as a comparison (made once per band)."""
    return _bands.get(
        band,
        lambda b: rf.FactComparison(
            fact=item.fact or "",
            above=b.above,
            at_least=b.at_least,
            below=b.below,
            at_most=b.at_most,
        ),
    )


def _item(view: CaseView, item: rf.PointItem, scores: dict[str, Score]) -> ItemResult:
    title = item.title or item.id
    if item.applies_when is not None:
        applies = evaluate_leaf(view, item.applies_when, scores)
        if applies.value is False:
            return ItemResult(item.id, title, 0.0, 0.0, 0.0, detail="does not apply")
        if applies.value is None:
            inner = _item(view, item.model_copy(update={"applies_when": None}), scores)
            return ItemResult(
                item.id,
                title,
                None,
                min(0.0, inner.low),
                max(0.0, inner.high),
                missing=applies.missing,
                detail="cannot tell whether it applies",
            )
    if item.bands is not None:
        return _band_points(view, item)
    assert item.when is not None and item.points is not None
    res: LeafResult = evaluate_leaf(view, item.when, scores)
    if res.value is None:
        return ItemResult(
            item.id,
            title,
            None,
            min(0.0, item.points),
            max(0.0, item.points),
            missing=res.missing,
            detail="; ".join(res.detail),
        )
    got = item.points if res.value else 0.0
    return ItemResult(
        item.id,
        title,
        got,
        got,
        got,
        facts=res.facts if res.value else [],
        detail="; ".join(res.detail),
    )


class Points(dict[str, PointResult]):
    """A case's point scores, each evaluated the first time it is read.

    Most point scores concern few patients (CURB-65 those with pneumonia): a
    score that is not reported and that no rule reaches is never evaluated. A
    score whose items cannot be evaluated (a unit that does not convert) is
    unknown in every item, is not reported, and is named by
    :meth:`problems`.
    """

    def __init__(
        self, view: CaseView, defined: list[rf.PointScore], scores: dict[str, Score]
    ) -> None:
        super().__init__()
        self._view = view
        self._defined = {ps.id: ps for ps in defined}
        self._scores = scores
        self._reported: dict[str, bool] = {}
        self._failed: dict[str, str] = {}

    def reported(self, pid: str) -> bool:
        """Whether the score is shown for this case (its ``reported_when``)."""
        known = self._reported.get(pid)
        if known is None:
            when = self._defined[pid].reported_when
            try:
                known = (
                    when is None
                    or decide_leaf(self._view, when, self._scores) is not False
                )
            except UnitError as err:
                self._failed[pid] = f"point score {pid} could not be evaluated: {err}"
                known = False
            self._reported[pid] = known
        return known

    def __missing__(self, pid: str) -> PointResult:
        ps = self._defined[pid]
        try:
            items = [_item(self._view, item, self._scores) for item in ps.items]
            result = PointResult(ps, items, self.reported(pid))
        except UnitError as err:
            self._failed[pid] = f"point score {pid} could not be evaluated: {err}"
            unknown = [
                ItemResult(i.id, i.title or i.id, None, -1e9, 1e9, detail=str(err))
                for i in ps.items
            ]
            result = PointResult(ps, unknown, reported=False)
        self[pid] = result
        return result

    def problems(self) -> list[str]:
        """What could not be evaluated, in the order the scores are defined."""
        return [self._failed[pid] for pid in self._defined if pid in self._failed]


def evaluate_points(
    view: CaseView, scores_defined: list[rf.PointScore], scores: dict[str, Score]
) -> Points:
    """A case's point scores, evaluated as they are read (see :class:`Points`)."""
    return Points(view, scores_defined, scores)


# The name a point score's total goes by in the facts used for a conclusion.
SCORE_FACT_PREFIX = "points:"


def points_leaf(cond: rf.PointsTest, points: dict[str, PointResult]) -> LeafResult:
    """Decide a comparison of a point score's total, in three values."""
    result = points[cond.points]
    if cond.determined is not None:
        known = result.total is not None
        return LeafResult(known == cond.determined)
    used = FactUsed(
        name=f"{SCORE_FACT_PREFIX}{cond.points}",
        value=result.total,
        aggregate="sum",
        readings=len(result.items),
    )
    checks: list[bool | None] = []
    for op, (test, _sign) in OPERATORS.items():
        cut = getattr(cond, op)
        if cut is None:
            continue
        low_ok, high_ok = test(result.low, float(cut)), test(result.high, float(cut))
        checks.append(low_ok if low_ok == high_ok else None)
    if cond.any_item_at_least is not None:
        cut = float(cond.any_item_at_least)
        if any(i.points is not None and i.points >= cut for i in result.items):
            checks.append(True)
        elif all(i.high < cut for i in result.items):
            checks.append(False)
        else:
            checks.append(None)
    if False in checks:
        return LeafResult(False, facts=[used])
    if None in checks:
        shown = f"{result.low:g} to {result.high:g}"
        return LeafResult(
            None,
            missing=result.missing,
            detail=[f"{result.score.title} is {shown} so far"],
        )
    return LeafResult(True, facts=[used])
