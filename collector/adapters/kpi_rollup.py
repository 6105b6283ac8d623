"""The KPI roll-up's contribution of new slices (031), taken from the records the writer
has in memory rather than read back from ``metric_values``.

The same definition as ``collector_kpi_queue_rollup_apply`` (031): per (slice, queue
dimension group) the KPI inputs, each the max over the group's rows (as kpi_interval
takes them), and per service-level threshold the service level, V2's answered-within
count and the group's contacts queued. Python only picks these float8 inputs out of the
rows (``contribution``); the casts to numeric, the products, the sums and the upsert are
the SQL's (queries.sql ``kpi_rollup_upsert``), so the numbers are those a computation
from scratch gives."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from decimal import Context, Decimal, localcontext
from itertools import repeat
from operator import itemgetter, mul, truediv
from typing import Any


@dataclass(frozen=True, slots=True)
class Layout:
    """Where a metric set keeps the KPI inputs (kpi_layout, 015): 1-based ords or None."""

    queued: int | None
    handled: int | None
    abandoned: int | None
    aht: int | None
    asa: int | None
    occupancy: int | None
    sl: tuple[tuple[int, str], ...]  # (ord, threshold key)
    answered: tuple[tuple[int, str], ...]
    # the thresholds (those with a service level, each once) and where their values are
    # in what ``reader`` returns: the service levels' positions, the answered counts'
    keys: tuple[str, ...] = field(init=False)
    sl_pos: tuple[tuple[int, ...], ...] = field(init=False)
    ans_pos: tuple[tuple[int, ...], ...] = field(init=False)
    ans_only: tuple[tuple[str, tuple[int, ...]], ...] = field(init=False)  # answered counts without one

    def __post_init__(self) -> None:
        keys = tuple(dict.fromkeys(k for _o, k in self.sl))
        n = len(self.sl)
        object.__setattr__(self, "keys", keys)
        object.__setattr__(self, "sl_pos", tuple(tuple(6 + j for j, (_o, k) in enumerate(self.sl) if k == key)
                                                 for key in keys))
        object.__setattr__(self, "ans_pos", tuple(tuple(6 + n + j for j, (_o, k) in enumerate(self.answered)
                                                        if k == key) for key in keys))
        object.__setattr__(self, "ans_only", tuple(
            (key, tuple(6 + n + j for j, (_o, k) in enumerate(self.answered) if k == key))
            for key in dict.fromkeys(k for _o, k in self.answered) if key not in keys))

    @classmethod
    def of(cls, row: Mapping[str, Any]) -> Layout:
        return cls(row["contacts_queued"], row["contacts_handled"], row["contacts_abandoned"],
                   row["avg_handle_time"], row["avg_answer_time"], row["occupancy"],
                   tuple(zip(row["sl_ords"] or (), row["sl_keys"] or (), strict=True)),
                   tuple(zip(row["answered_ords"] or (), row["answered_keys"] or (), strict=True)))

    def reader(self, n: int) -> Callable[[Sequence[float | None]], tuple[Any, ...]]:
        """For a row of ``n`` values padded with one None: queued, handled, abandoned, aht,
        asa, occupancy, the service levels, the answered counts (an ord absent or beyond
        the row reads the padding, as vals[ord] reads NULL)."""
        ords = [self.queued, self.handled, self.abandoned, self.aht, self.asa, self.occupancy,
                *(o for o, _k in self.sl), *(o for o, _k in self.answered)]
        return itemgetter(*[n if o is None or o > n else o - 1 for o in ords])


def _mx(a: Any, b: Any) -> Any:
    """max() as SQL's aggregate takes it: NULLs ignored."""
    if a is None:
        return b
    if b is None:
        return a
    return a if a >= b else b


_PAD = [None]
Pair = tuple[int, int, datetime, int, int]  # instance_ref, profile_id, slice_start, slice_seconds, dims_id


def contribution(records: Iterable[Sequence[Any]], layouts: Mapping[int, Layout], queue_dims: Mapping[int, bool],
                 local_day: Mapping[tuple[datetime, int], date]) -> tuple[list[list[Any]], list[list[Any]]]:
    """What metric_values ``records`` (writer order: slice_start, instance_ref, dims_id,
    metric_set_id, slice_seconds, profile_id, collected_at, vals) add, as the column
    arrays of ``kpi_rollup_upsert``: one row per (slice, queue group) — instance, profile,
    local day, group, UTC day, slice start and length, the six inputs — and one per
    (slice, group, threshold) — the same key columns, threshold, service level, answered
    count, contacts queued."""
    readers: dict[tuple[int, int], tuple[Layout, Callable[[Any], tuple[Any, ...]]]] = {}
    got: dict[Pair, tuple[Layout, tuple[Any, ...]]] = {}
    merged: dict[Pair, list[Any]] = {}  # pairs stored in more than one row (metric sets)
    for r in records:
        if not queue_dims.get(r[2]):
            continue
        vals = r[7]
        rk = (r[3], len(vals))
        rd = readers.get(rk)
        if rd is None:
            lay = layouts.get(r[3])
            if lay is None:
                continue
            rd = readers[rk] = (lay, lay.reader(len(vals)))
        key = (r[1], r[5], r[0], r[4], r[2])
        t = (rd[0], rd[1](vals + _PAD))
        old = got.get(key)
        if old is None:
            got[key] = t
        else:
            m = merged.get(key)
            if m is None:
                m = merged[key] = _norm(*old)
            n = _norm(*t)
            for i in range(6):
                m[i] = _mx(m[i], n[i])
            for k, (has, sl, ans) in n[6].items():
                o = m[6].get(k)
                m[6][k] = (has, sl, ans) if o is None else (o[0] or has, _mx(o[1], sl), _mx(o[2], ans))
    pairs: list[list[Any]] = [[] for _ in range(13)]
    sls: list[list[Any]] = [[] for _ in range(9)]
    day: dict[tuple[datetime, int], tuple[date, date]] = {}
    for key, (lay, v) in got.items():
        iref, pid, start, secs, dims = key
        d = day.get((start, pid))
        if d is None:
            d = day[(start, pid)] = (local_day[(start, pid)], start.astimezone(UTC).date())
        m = merged.get(key)
        base = v if m is None else m
        for i, x in enumerate((iref, pid, d[0], dims, d[1], start, secs, *base[:6])):
            pairs[i].append(x)
        if m is None:
            thresholds = [(k, _mx_at(v, sp), _mx_at(v, ap)) for k, sp, ap in zip(lay.keys, lay.sl_pos, lay.ans_pos,
                                                                                  strict=True)]
        else:
            thresholds = [(k, sl, ans) for k, (has, sl, ans) in m[6].items() if has]
        for k, sl, ans in thresholds:
            for i, x in enumerate((iref, pid, d[0], dims, d[1], k, sl, ans, base[0])):
                sls[i].append(x)
    return pairs, sls


def _mx_at(v: tuple[Any, ...], pos: tuple[int, ...]) -> Any:
    if len(pos) == 1:
        return v[pos[0]]
    m = None
    for p in pos:
        m = _mx(m, v[p])
    return m


def _norm(lay: Layout, v: tuple[Any, ...]) -> list[Any]:
    """A row's inputs with its thresholds as {key: (has a service level, service level, answered)}."""
    th = {k: (True, _mx_at(v, sp), _mx_at(v, ap)) for k, sp, ap in zip(lay.keys, lay.sl_pos, lay.ans_pos, strict=True)}
    th.update((k, (False, None, _mx_at(v, ap))) for k, ap in lay.ans_only)
    return [*v[:6], th]


def _sum(xs: list[Any]) -> str:
    """sum(x::numeric) over the non-NULL float8s ``xs``, exactly, as text (0 where none)."""
    xs = [x for x in xs if x is not None]
    if not xs:
        return "0"
    try:
        s = sum(xs)
        if -9e15 < s < 9e15 and all(map(float.is_integer, xs)) and min(xs) > -1e15 and max(xs) < 1e15:
            return str(int(s))  # integers below 2**53 throughout: the float sum is exact, each cast the integer
    except TypeError:  # not floats
        pass
    with localcontext(_EXACT):
        return str(sum((Decimal(f"{x:.15g}") for x in xs), Decimal(0)))  # float8_numeric: %.15g


_G15 = "{:.15g}".format
_EXACT = Context(prec=100_000, Emax=999_999, Emin=-999_999)


def aggregate(pairs: list[list[Any]], sls: list[list[Any]]) -> tuple[list[list[Any]], list[list[Any]]]:
    """The roll-up rows the per-pair inputs add up to (collector_kpi_queue_rollup_apply's
    sums, computed exactly): column arrays for ``kpi_rollup_add_rows``."""
    iref, pid, ld, dims, ud, start, secs, q, h, a, aht, asa, occ = pairs
    groups: dict[tuple[Any, ...], list[int]] = {}
    for i, gk in enumerate(zip(iref, pid, ld, dims, ud, strict=True)):
        g = groups.get(gk)
        if g is None:
            groups[gk] = [i]
        else:
            g.append(i)
    ends = [s + timedelta(seconds=n) for s, n in zip(start, secs, strict=True)]
    ahth = [None if x is None or y is None else x * y for x, y in zip(aht, h, strict=True)]
    asah = [None if x is None or y is None else x * y for x, y in zip(asa, h, strict=True)]
    h_aht = [None if x is None else y for x, y in zip(aht, h, strict=True)]
    h_asa = [None if x is None else y for x, y in zip(asa, h, strict=True)]
    q_ab = [None if x is None else y for x, y in zip(a, q, strict=True)]
    out: list[list[Any]] = [[] for _ in range(20)]
    for gk, ix in groups.items():
        get = itemgetter(*ix) if len(ix) > 1 else (lambda c, i=ix[0]: (c[i],))
        cq, ch, ca = get(q), get(h), get(a)
        row = (*gk, len(ix), min(get(start)), max(get(ends)),
               len(ix) - cq.count(None), _sum(list(cq)), len(ix) - ch.count(None), _sum(list(ch)),
               len(ix) - ca.count(None), _sum(list(ca)), _sum(list(get(ahth))), _sum(list(get(h_aht))),
               _sum(list(get(asah))), _sum(list(get(h_asa))), _sum(list(get(q_ab))),
               occ[ix[0]] if len(ix) == 1 else None)
        for c, v in zip(out, row, strict=True):
            c.append(v)
    s_iref, s_pid, s_ld, s_dims, s_ud, key, sl, ans, sq = sls
    num = [x if x is not None else (None if s is None or y is None else s * y / 100.0)
           for x, s, y in zip(ans, sl, sq, strict=True)]
    den = [y if (x is not None or s is not None) else None for x, s, y in zip(ans, sl, sq, strict=True)]
    sgroups: dict[tuple[Any, ...], list[int]] = {}
    for i, sk in enumerate(zip(s_iref, s_pid, s_ld, s_dims, s_ud, key, strict=True)):
        g = sgroups.get(sk)
        if g is None:
            sgroups[sk] = [i]
        else:
            g.append(i)
    sout: list[list[Any]] = [[] for _ in range(9)]
    for sk, ix in sgroups.items():
        get = itemgetter(*ix) if len(ix) > 1 else (lambda c, i=ix[0]: (c[i],))
        for c, v in zip(sout, (*sk, len(ix), _sum(list(get(num))), _sum(list(get(den)))), strict=True):
            c.append(v)
    return out, sout


def _colsum(vecs: Sequence[Sequence[Any]]) -> tuple[list[int], list[str]]:
    """Per position of equal-length vectors (one a slice): how many are non-NULL, and
    their exact sum(x::numeric) as text."""
    n = len(vecs)
    try:  # a NULL (None) among the values raises TypeError on each fast path: position by position then
        bound = min(1e15, 9e15 / n)
        if all(all(map(float.is_integer, v)) and -bound < min(v) and max(v) < bound for v in vecs):
            # integers, below 2**53 summed: each cast is the integer, the float sums exact
            return [n] * len(vecs[0]), list(map(str, map(int, map(sum, zip(*vecs, strict=True)))))
        scaled = _scaled(vecs)
        if scaled is not None:
            return [n] * len(vecs[0]), scaled
        with localcontext(_EXACT):  # float8_numeric: %.15g; the sums exact
            decs = [list(map(Decimal, map(_G15, v))) for v in vecs]
            return [n] * len(vecs[0]), list(map(str, map(sum, zip(*decs, strict=True))))
    except TypeError:  # a NULL, or not floats
        pass
    counts, sums = [], []
    for xs in zip(*vecs, strict=True):
        counts.append(n - xs.count(None))
        sums.append(_sum(list(xs)))
    return counts, sums


def _scaled(vecs: Sequence[Sequence[float]]) -> list[str] | None:
    """The exact sums where every value is the float8 nearest a decimal of at most two
    places and 13 digits (as a service level times contacts over 100 is): such a value
    casts (%.15g) to that decimal, its scale the places it needs; a sum's scale is its
    terms' largest. None where the values are not all such."""
    ns = []
    for v in vecs:
        try:
            n = list(map(round, map(mul, v, repeat(100.0))))
        except (ValueError, OverflowError):  # NaN, infinity
            return None
        if max(n) >= 10**13 or min(n) <= -(10**13) or list(map(truediv, n, repeat(100.0))) != list(v):
            return None
        ns.append(n)
    scales = map(max, zip(*([2 if t % 10 else 1 if t % 100 else 0 for t in n] for n in ns), strict=True))
    return [_hundredths(t, k) for t, k in zip(map(sum, zip(*ns, strict=True)), scales, strict=True)]


def _hundredths(t: int, scale: int) -> str:
    """t / 100 as numeric text with ``scale`` places (t a multiple of 10 ** (2 - scale))."""
    sign, a = ("-", -t) if t < 0 else ("", t)
    whole, frac = divmod(a, 100)
    if scale == 0:
        return f"{sign}{whole}"
    return f"{sign}{whole}.{frac:02d}" if scale == 2 else f"{sign}{whole}.{frac // 10}"


def rollup_rows(slices: Iterable[tuple[int, int, datetime, int, Sequence[Sequence[Any]]]],
                layouts: Mapping[int, Layout], queue_dims: Mapping[int, bool],
                local_day: Mapping[tuple[datetime, int], date]) -> tuple[list[list[Any]], list[list[Any]]]:
    """``aggregate(*contribution(...))`` of the slices' records ((instance_ref, profile_id,
    slice_start, slice_seconds, records) each), column-wise where slices of one instance,
    profile and day store the same queue groups in the same order under one metric set
    (what a collection writes), and row by row otherwise."""
    buckets: dict[tuple[Any, ...], list[tuple[datetime, int, list[tuple[Any, ...]]]]] = {}
    rest: list[Sequence[Any]] = []
    for iref, pid, start, secs, recs in slices:
        rs = [r for r in recs if queue_dims.get(r[2])]
        if not rs:
            continue
        mids = {r[3] for r in rs}
        lens = {len(r[7]) for r in rs}
        lay = layouts.get(next(iter(mids))) if len(mids) == 1 and len(lens) == 1 else None
        dims = tuple(r[2] for r in rs)
        if lay is None or lay.ans_only or len(lay.keys) != len(lay.sl) or len(set(dims)) != len(dims):
            rest.extend(rs)
            continue
        get = lay.reader(next(iter(lens)))
        cols = list(zip(*map(get, [r[7] + _PAD for r in rs]), strict=True))
        day = (local_day[(start, pid)], start.astimezone(UTC).date())
        buckets.setdefault((iref, pid, *day, dims, lay), []).append((start, secs, cols))
    if rest:
        rows, sls = aggregate(*contribution(rest, layouts, queue_dims, local_day))
    else:
        rows, sls = [[] for _ in range(20)], [[] for _ in range(9)]
    for (iref, pid, ld, ud, dims, lay), got in buckets.items():
        d = len(dims)
        n = len(got)
        cq = [c[0] for _s, _n, c in got]
        ch = [c[1] for _s, _n, c in got]
        ca = [c[2] for _s, _n, c in got]
        ahth, asah, h_aht, h_asa, q_ab = [], [], [], [], []
        for _s, _n, c in got:
            q, h, a, aht, asa = c[:5]
            ahth.append(_times(aht, h))
            asah.append(_times(asa, h))
            h_aht.append(_where(aht, h))
            h_asa.append(_where(asa, h))
            q_ab.append(_where(a, q))
        ps = min(s for s, _n, _c in got)
        pe = max(s + timedelta(seconds=k) for s, k, _c in got)
        nq, sq = _colsum(cq)
        nh, sh = _colsum(ch)
        na, sa = _colsum(ca)
        occ = list(got[0][2][5]) if n == 1 else [None] * d
        for c, v in zip(rows, ([iref] * d, [pid] * d, [ld] * d, dims, [ud] * d, [n] * d, [ps] * d, [pe] * d,
                               nq, sq, nh, sh, na, sa, _colsum(ahth)[1], _colsum(h_aht)[1], _colsum(asah)[1],
                               _colsum(h_asa)[1], _colsum(q_ab)[1], occ), strict=True):
            c.extend(v)
        for k, sp, ap in zip(lay.keys, lay.sl_pos, lay.ans_pos, strict=True):
            nums: list[Sequence[Any]] = []
            dens: list[Sequence[Any]] = []
            for _s, _n, c in got:
                q, sl = c[0], c[sp[0]]
                ans = c[ap[0]] if len(ap) == 1 else [_mx_at(t, ap) for t in zip(*c, strict=True)] if ap else [None] * d
                if ans.count(None) == 0:  # V2: the answered counts
                    nums.append(ans)
                    dens.append(q)
                elif ans.count(None) == d and sl.count(None) == 0 and q.count(None) == 0:  # v1: the service levels
                    nums.append(list(map(truediv, map(mul, sl, q), repeat(100.0, d))))
                    dens.append(q)
                else:
                    nums.append([x if x is not None else (None if s is None or y is None else s * y / 100.0)
                                 for x, s, y in zip(ans, sl, q, strict=True)])
                    dens.append([y if (x is not None or s is not None) else None
                                 for x, s, y in zip(ans, sl, q, strict=True)])
            for c, v in zip(sls, ([iref] * d, [pid] * d, [ld] * d, dims, [ud] * d, [k] * d, [n] * d,
                                  _colsum(nums)[1], _colsum(dens)[1]), strict=True):
                c.extend(v)
    return rows, sls


def _times(x: Sequence[Any], y: Sequence[Any]) -> Sequence[Any]:
    """x * y per position, NULL where either is (float8 products, as the SQL's)."""
    try:
        return list(map(mul, x, y))
    except TypeError:  # a NULL
        pass
    return [None if a is None or b is None else a * b for a, b in zip(x, y, strict=True)]


def _where(x: Sequence[Any], y: Sequence[Any]) -> Sequence[Any]:
    """y where x is not NULL."""
    if x.count(None) == 0:
        return y
    return [None if a is None else b for a, b in zip(x, y, strict=True)]


def unique_groups(rows: list[list[Any]], sls: list[list[Any]]) -> bool:
    """No roll-up row twice (one upsert cannot touch a row twice)."""
    return len(set(zip(*rows[:5], strict=True))) == len(rows[0]) and len(set(zip(*sls[:6], strict=True))) == len(sls[0])
