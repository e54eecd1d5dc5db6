"""A small sparse MILP builder on HiGHS (highspy): variables and rows by index, solved in one call.

Building the matrix ourselves keeps model construction linear in its size; the
highspy expression API is far slower at the 10x fleet (~10^5 columns).
"""
from __future__ import annotations

import math
import time
from collections.abc import Sequence
from dataclasses import dataclass, field

import highspy
import numpy as np
import numpy.typing as npt

INF = math.inf


def new_highs() -> highspy.Highs:
    """A HiGHS instance that prints nothing (its constructor writes a banner straight to fd 1)."""
    import os
    import sys

    sys.stdout.flush()
    saved = os.dup(1)
    devnull = os.open(os.devnull, os.O_WRONLY)
    try:
        os.dup2(devnull, 1)
        h = highspy.Highs()  # type: ignore[no-untyped-call]  # highspy leaves Highs.__init__ unannotated
        h.setOptionValue("output_flag", False)
    finally:
        os.dup2(saved, 1)
        os.close(saved)
        os.close(devnull)
    return h


def solver_version() -> str:
    h = new_highs()
    return f"HiGHS {h.version()}"


FEASIBLE = ("optimal", "time_limit", "target")  # statuses that come with a feasible point


@dataclass
class Result:
    status: str  # optimal | time_limit | target | infeasible | infeasible_or_timeout | error:...
    objective: float
    dual_bound: float
    mip_gap: float
    values: np.ndarray
    row_values: np.ndarray


@dataclass
class Model:
    lb: list[float] = field(default_factory=list)
    ub: list[float] = field(default_factory=list)
    cost: list[float] = field(default_factory=list)
    integer: list[bool] = field(default_factory=list)
    row_lb: list[float] = field(default_factory=list)
    row_ub: list[float] = field(default_factory=list)
    row_start: list[int] = field(default_factory=lambda: [0])
    row_index: list[int] = field(default_factory=list)
    row_value: list[float] = field(default_factory=list)

    def var(self, lb: float = 0.0, ub: float = INF, cost: float = 0.0, integer: bool = False) -> int:
        self.lb.append(lb)
        self.ub.append(ub)
        self.cost.append(cost)
        self.integer.append(integer)
        return len(self.lb) - 1

    def row(self, terms: list[tuple[int, float]], lb: float = -INF, ub: float = INF) -> int:
        merged: dict[int, float] = {}
        for idx, coef in terms:
            merged[idx] = merged.get(idx, 0.0) + coef
        for idx in sorted(merged):
            if merged[idx] != 0.0:
                self.row_index.append(idx)
                self.row_value.append(merged[idx])
        self.row_start.append(len(self.row_index))
        self.row_lb.append(lb)
        self.row_ub.append(ub)
        return len(self.row_lb) - 1

    @property
    def num_vars(self) -> int:
        return len(self.lb)

    @property
    def num_rows(self) -> int:
        return len(self.row_lb)

    def violations(self, values: npt.ArrayLike, tol: float = 1e-6) -> int:
        """How many variable bounds and rows `values` breaks (0 for a feasible point)."""
        vals = np.asarray(values, dtype=float)
        bad = int(np.sum(vals < np.asarray(self.lb) - tol) + np.sum(vals > np.asarray(self.ub) + tol))
        starts = np.asarray(self.row_start, dtype=np.int64)
        products = np.asarray(self.row_value) * vals[np.asarray(self.row_index, dtype=np.int64)]
        sums = np.add.reduceat(np.append(products, 0.0), starts[:-1]) if self.num_rows else np.zeros(0)
        sums[starts[:-1] == starts[1:]] = 0.0
        bad += int(np.sum(sums < np.asarray(self.row_lb) - tol) + np.sum(sums > np.asarray(self.row_ub) + tol))
        return bad

    def solve(self, *, relax: bool = False, time_limit: float = 60.0, mip_gap: float = 1e-3,
              start: npt.ArrayLike | None = None, upper: npt.ArrayLike | None = None, integer: Sequence[bool] | None = None,
              target: float | None = None, presolve: bool = True, lower: npt.ArrayLike | None = None,
              cutoff: float | None = None) -> Result:
        """Solve the model, or a variant of it that keeps its rows.

        `start`: a feasible point to begin from (HiGHS then only improves and proves).
        `upper`, `lower`: replacement variable bounds (a restricted model).
        `integer`: replacement integrality flags (a partial relaxation).
        `target`: stop at the first solution at or below this objective.
        `presolve`: False turns HiGHS presolve off (see below).
        `cutoff`: only look for points below it, and stop once the dual bound reaches it: the run then proves
        min(dual bound, cutoff) (nodes bounded at or above the cutoff are pruned unexplored).
        """
        started = time.perf_counter()
        h = new_highs()
        # One thread and a fixed seed: the same spec gives the same plan, byte for byte.
        h.setOptionValue("threads", 1)
        h.setOptionValue("random_seed", 0)
        h.setOptionValue("time_limit", float(time_limit))
        h.setOptionValue("mip_rel_gap", float(mip_gap))
        # Measured on the prod fleet: the root reduced-cost heuristic costs ~1 s and never found the incumbent.
        h.setOptionValue("mip_heuristic_run_root_reduced_cost", False)
        if not presolve:
            h.setOptionValue("presolve", "off")
        if target is not None:
            h.setOptionValue("objective_target", float(target))
        if cutoff is not None:
            h.setOptionValue("objective_bound", float(cutoff))
        lp = highspy.HighsLp()
        lp.num_col_ = self.num_vars
        lp.num_row_ = self.num_rows
        lp.col_cost_ = np.asarray(self.cost, dtype=float)
        lp.col_lower_ = np.asarray(self.lb if lower is None else lower, dtype=float)
        lp.col_upper_ = np.asarray(self.ub if upper is None else upper, dtype=float)
        lp.row_lower_ = np.asarray(self.row_lb, dtype=float)
        lp.row_upper_ = np.asarray(self.row_ub, dtype=float)
        lp.a_matrix_.format_ = highspy.MatrixFormat.kRowwise
        lp.a_matrix_.start_ = np.asarray(self.row_start, dtype=np.int32)
        lp.a_matrix_.index_ = np.asarray(self.row_index, dtype=np.int32)
        lp.a_matrix_.value_ = np.asarray(self.row_value, dtype=float)
        lp.a_matrix_.num_col_ = self.num_vars
        lp.a_matrix_.num_row_ = self.num_rows
        integer = self.integer if integer is None else list(integer)
        if not relax and any(integer):
            lp.integrality_ = [highspy.HighsVarType.kInteger if i else highspy.HighsVarType.kContinuous
                               for i in integer]
        h.passModel(lp)
        if start is not None and not relax:
            sol = highspy.HighsSolution()
            sol.col_value = np.asarray(start, dtype=float)
            sol.value_valid = True
            h.setSolution(sol)
        h.run()
        status = h.getModelStatus()
        info = h.getInfo()
        S = highspy.HighsModelStatus
        if status == S.kOptimal:
            name = "optimal"
        elif status in (S.kInfeasible, S.kUnboundedOrInfeasible):
            name = "infeasible"
        elif status == S.kTimeLimit and info.primal_solution_status == 2:
            name = "time_limit"
        elif status == S.kObjectiveTarget:
            name = "target"
        elif status == S.kTimeLimit:
            name = "infeasible_or_timeout"
        else:
            name = f"error:{h.modelStatusToString(status)}"
        if name in FEASIBLE:
            sol = h.getSolution()
            values = np.asarray(sol.col_value)
            rows = np.asarray(sol.row_value)
            objective = info.objective_function_value
            if start is not None and not relax and presolve and \
                    abs(float(np.dot(lp.col_cost_, values)) - objective) > 1e-6 * max(1.0, abs(objective)):
                # Seen with HiGHS 1.16: given a start, presolve finds a better point, reports its objective
                # but hands back the start's values. Without presolve the values match the objective.
                left = max(0.05, time_limit - (time.perf_counter() - started))
                return self.solve(relax=relax, time_limit=left, mip_gap=mip_gap, start=start, upper=upper,
                                  integer=integer, target=target, presolve=False, lower=lower, cutoff=cutoff)
        else:
            values = np.zeros(self.num_vars)
            rows = np.zeros(self.num_rows)
        objective = info.objective_function_value
        if relax or not any(integer):
            dual = objective
            gap = 0.0
        else:
            dual = info.mip_dual_bound
            gap = info.mip_gap
            if cutoff is not None:
                dual = min(dual, cutoff) if name in (*FEASIBLE, "infeasible_or_timeout") else cutoff
        return Result(name, objective, dual, gap, values, rows)
