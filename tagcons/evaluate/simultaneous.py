"""Simultaneous intervals of every pairwise difference in a table of runs tested on the same rows.

`compare` names a best run on the test rows and sets every other run against it. Testing each run
against the best one at a time lets false claims pile up: one chance per comparison, and more
because the best was picked on the same rows. Here every pair of runs gets an interval from ONE set
of image resamples shared by all runs, wide enough that all of them cover their true differences at
once with 95% probability: the single-step max-|t| procedure (Westfall & Young) on studentised
differences (each resample's difference minus the observed one, over its own infinitesimal-jackknife
standard error; see `intervals.resample`). The critical value is the 95th percentile, over the
resamples, of the largest |t| over all pairs; a pair's interval is its difference plus or minus that
value times its standard error, and its adjusted p-value the share of resamples whose largest |t|
reaches its own. Whichever run turns out best, its intervals are among these, so the chance that a
table shows any "significant" difference between runs of equal skill is at most 5%, the choice of
the best on the same rows included. tests/test_simultaneous.py and benchmarks/compare_fwer.py check
the rate by simulation.

A resample where the metric or its standard error is undefined for some pair counts as exceeding
every critical value (it widens, never narrows); their number is kept in ``undefined``.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from tagcons.evaluate.intervals import LEVEL, PairedDifference, Resampled, difference_resamples, pivot_errors

PROCEDURE = (
    "95% simultaneous intervals and adjusted p-values over all {pairs} pairs of runs "
    "(studentised max-|t| over the same {resamples} image resamples, so the best being picked on these rows "
    "is accounted for: any 'significant' here is false with at most 5% chance for the whole table)"
)


@dataclass
class TableDifferences:
    """Every pairwise difference of one metric in one table of runs."""

    metric: str
    point: np.ndarray  # [runs] the metric on the test rows
    scale: np.ndarray  # [runs, runs] standard error of run i - run j on the test rows
    critical: float  # the critical value of the max-|t| statistic (inf when too many are undefined)
    max_t: np.ndarray  # [resamples] the largest |t| over the pairs in each resample, sorted
    undefined: int  # resamples where the metric or its standard error is undefined for some pair

    @property
    def pairs(self) -> int:
        return len(self.point) * (len(self.point) - 1) // 2

    def procedure(self) -> str:
        return PROCEDURE.format(pairs=self.pairs, resamples=len(self.max_t))

    def difference(self, run: int, reference: int) -> PairedDifference:
        """``run`` minus ``reference``: the difference, its simultaneous interval and its adjusted p-value."""
        difference, scale = self.point[run] - self.point[reference], self.scale[run, reference]
        if not np.isfinite(difference) or not np.isfinite(scale):
            return PairedDifference(self.metric, None, None, None)
        half = self.critical * scale
        interval = [float(difference - half), float(difference + half)] if np.isfinite(half) else None
        return PairedDifference(self.metric, float(difference), interval, self._p_value(difference, scale))

    def _p_value(self, difference: float, scale: float) -> float:
        """Single-step adjusted p: the share of resamples whose largest |t| reaches this pair's."""
        if not scale > 0:
            return 1.0
        reached = len(self.max_t) - np.searchsorted(self.max_t, abs(difference) / scale, side="left")
        return float(min(1.0, (reached + 1) / (len(self.max_t) + 1)))


def table_differences(resampled: list[Resampled], metric: str, level: float = LEVEL) -> TableDifferences:
    """Simultaneous intervals of ``metric`` for every pair of runs, from their `intervals.resample` on the
    same images, resamples and seed."""
    runs = len(resampled)
    point = np.asarray([r.values[metric][0] for r in resampled], dtype=np.float64)
    scale = np.full((runs, runs), np.nan)
    t_values = []
    for first, second in zip(*np.triu_indices(runs, 1)):
        values, errors = difference_resamples(resampled[first], resampled[second], metric)
        scale[first, second] = scale[second, first] = errors[0]
        if np.isfinite(values[0]) and errors[0] > 0:
            t_values.append(_abs_t(values, errors))
    max_t, undefined = _largest(t_values, resampled[0].weights.shape[0] - 1)
    critical = float(np.quantile(max_t, level, method="higher")) if len(max_t) else float("inf")
    return TableDifferences(metric, point, scale, critical, max_t, undefined)


def _abs_t(values: np.ndarray, errors: np.ndarray) -> np.ndarray:
    """[resamples] |theta* - theta| / se* of one pair (0 where nothing moved; NaN where undefined)."""
    moved = values[1:] - values[0]
    with np.errstate(invalid="ignore", divide="ignore"):
        t = np.abs(moved) / pivot_errors(errors)
    return np.where(moved == 0, 0.0, t)


def _largest(t_values: list[np.ndarray], resamples: int) -> tuple[np.ndarray, int]:
    """Each resample's largest |t| over the pairs, sorted (inf where any pair is undefined), and how many
    resamples had an undefined one."""
    if not t_values:
        return np.zeros(resamples), 0
    stacked = np.stack(t_values)
    undefined = np.isnan(stacked).any(axis=0)
    return np.sort(np.where(undefined, np.inf, np.nan_to_num(stacked, posinf=np.inf).max(axis=0))), int(undefined.sum())
