"""Measure the site monitor (ml.serving.monitoring) by replaying a labelled collection as a site's stream.

    python -m ml monitor --model ARTIFACT                      # store the reference (validation films)
    python -m ml monitor --model ARTIFACT --simulate --subset test --out FILE.json
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from ml.evaluation.datasets import EvaluationError, default_data_dir, select_samples
from ml.evaluation.plots import plot_monitoring
from ml.serving.command_line import SPLIT_DATA_ROOT_HELP, add_model_and_data_arguments
from ml.serving.labels import POSITIVE_CLASS
from ml.serving.monitoring import (
    DEFAULT_ALPHA,
    DEFAULT_MAX_FALSE_ALERTS,
    DEFAULT_MAX_PREVALENCE,
    DEFAULT_MIN_FILMS,
    Film,
    Limits,
    Reference,
    _Rule,
    _rules,
    add_reference,
    critical_hits,
    films_from_samples,
    load_reference,
    reference_breaches,
    reference_from_films,
    run_checks,
)
from ml.serving.predictor import Predictor

# --- measuring the monitor: replaying a labelled collection as a site's stream -------------------------------


@dataclass
class SimulationResult:
    feedback_share: float
    streams: int
    films_per_stream: int
    alarmed: float  # share of streams with an alarm at some point
    median_films_to_alarm: float | None  # over the streams that alarmed
    first_checks: dict[str, int] = field(default_factory=dict)  # which check alarmed first, how often


def simulate(reference: Reference, films: Sequence[Film], *, feedback_shares: Sequence[float], streams: int = 200,
             limits: Limits = Limits(), alpha: float = DEFAULT_ALPHA, min_films: int = DEFAULT_MIN_FILMS, seed: int = 0,
             length: int | None = None, covid_share: float | None = None) -> list[SimulationResult]:
    """Replay ``films`` (with their true labels) in random orders, running the monitor after every film.

    For each of ``feedback_shares``: feedback, with the true label, arrives on
    that share of the films (the same seed, so the same orders, for each).
    With ``length``, each stream draws that many films with replacement (a
    longer stream than the collection, as a site sees over months) instead of
    a permutation. With ``covid_share``, each draw is a COVID-19 film with that
    probability (a site whose share of COVID-19 differs from the collection's).
    Equivalent to calling ``run_checks`` on every prefix of every stream, but
    with each rule's alarm boundary worked out once per count of films (a rule
    compared within strata has no single boundary: its p-value is worked out
    only where a film could have moved it towards an alarm, and cached).
    """
    rules = _rules(reference, limits)
    blind = [Film(film.predicted, film.alert, film.warnings) for film in films]
    member = {seen: np.array([[rule.member(f) for rule in rules] for f in pool], dtype=bool)
              for seen, pool in ((True, films), (False, blind))}
    hit = {seen: np.array([[bool(rule.hit(f)) for rule in rules] for f in pool], dtype=bool) & member[seen]
           for seen, pool in ((True, films), (False, blind))}
    length = len(films) if length is None else length
    draw = _stream_order(films, length=length, covid_share=covid_share)
    by_boundary = np.array([rule.usable and rule.stratum is None for rule in rules])
    boundaries = np.array([
        [critical_hits(site_n=n, p_value=lambda hits, rule=rule, n=n: rule.p_value(hits, n),
                       site_higher=rule.alarm_if_higher, alpha=alpha) if usable else -2
         for rule, usable in zip(rules, by_boundary)]
        for n in range(length + 1)
    ])
    higher = np.array([rule.alarm_if_higher for rule in rules])
    stratified = [_StratifiedReplay(index=index, rule=rule,
                                    strata=np.array([rule.stratum(f) if rule.member(f) else 0 for f in films]),
                                    alpha=alpha, min_films=min_films)
                  for index, rule in enumerate(rules) if rule.usable and rule.stratum is not None]
    return [_replay(rules=rules, member=member, hit=hit, boundaries=boundaries, higher=higher, usable=by_boundary,
                    stratified=stratified, draw=draw, length=length, feedback_share=share, streams=streams,
                    min_films=min_films, seed=seed) for share in feedback_shares]


@dataclass
class _StratifiedReplay:
    """A rule compared within strata, replayed: the first film of a stream at which it alarms."""

    index: int  # the rule's column
    rule: _Rule
    strata: np.ndarray  # each film's stratum
    alpha: float
    min_films: int
    p_values: dict = field(default_factory=dict)  # (hits, films) per stratum -> p-value

    def first_alarm(self, *, order: np.ndarray, member: np.ndarray, hit: np.ndarray, until: int) -> int | None:
        """The first step (0-based, at most ``until``) at which the stream's films so far alarm; None if none.

        ``member`` and ``hit`` say, step by step, whether the film counts and is a hit. A film
        that is not a hit can only raise a higher-alarming p-value (and a hit a lower-alarming
        one), so an alarm can start only where the other kind of film arrives, or where the
        films first reach ``min_films``.
        """
        in_stratum = np.eye(len(self.rule.reference_strata), dtype=np.int64)[self.strata[order]]
        films = (in_stratum * member[:, None]).cumsum(axis=0)
        hits = (in_stratum * hit[:, None]).cumsum(axis=0)
        enough = films.sum(axis=1) >= self.min_films
        if not enough.any():
            return None
        moved = hit if self.rule.alarm_if_higher else member & ~hit
        steps = np.union1d(np.flatnonzero(moved & enough), [np.argmax(enough)])
        for step in steps[steps <= until]:
            key = (tuple(hits[step]), tuple(films[step]))
            if key not in self.p_values:
                self.p_values[key] = self.rule.stratified_p_value(list(zip(*key)))
            if self.p_values[key] < self.alpha:
                return int(step)
        return None


def _stream_order(films: Sequence[Film], *, length: int, covid_share: float | None) -> Callable:
    """A function of a random generator giving one stream: the films' indices in the order the site sees them."""
    count = len(films)
    if covid_share is None:
        if length == count:
            return lambda rng: rng.permutation(count)
        return lambda rng: rng.integers(0, count, length)
    if not 0.0 <= covid_share <= 1.0:
        raise ValueError("the COVID-19 share must lie between 0 and 1")
    covid = np.array([film.confirmed == POSITIVE_CLASS for film in films], dtype=bool)
    positives, others = np.flatnonzero(covid), np.flatnonzero(~covid)
    if (covid_share > 0 and not len(positives)) or (covid_share < 1 and not len(others)):
        raise ValueError("a COVID-19 share needs confirmed COVID-19 films and other films to draw from")

    def order(rng: np.random.Generator) -> np.ndarray:
        from_positives = rng.random(length) < covid_share
        picked = np.empty(length, dtype=int)
        picked[from_positives] = rng.choice(positives, int(from_positives.sum()))  # no draws from an empty side
        picked[~from_positives] = rng.choice(others, int((~from_positives).sum()))
        return picked

    return order


def _replay(*, rules, member, hit, boundaries, higher, usable, stratified: Sequence[_StratifiedReplay],
            draw: Callable, length: int, feedback_share: float, streams: int, min_films: int,
            seed: int) -> SimulationResult:
    rng = np.random.default_rng(seed)
    alarm_at: list[int] = []
    first_checks: dict[str, int] = {}
    for _ in range(streams):
        order = draw(rng)
        with_feedback = rng.random(length) < feedback_share
        member_steps = np.where(with_feedback[:, None], member[True][order], member[False][order])
        hit_steps = np.where(with_feedback[:, None], hit[True][order], hit[False][order])
        members, hits = member_steps.cumsum(axis=0), hit_steps.cumsum(axis=0)
        boundary = np.take_along_axis(boundaries, members, axis=0)
        alarms = usable & (members >= min_films) & np.where(higher, hits >= boundary, hits <= boundary)
        fired = np.flatnonzero(alarms.any(axis=1))
        until = int(fired[0]) if len(fired) else length - 1
        for replay in stratified:
            step = replay.first_alarm(order=order, member=member_steps[:, replay.index],
                                      hit=hit_steps[:, replay.index], until=until)
            if step is not None:
                alarms[step, replay.index] = True
                until = step
        fired = np.flatnonzero(alarms.any(axis=1))
        if len(fired):
            alarm_at.append(int(fired[0]) + 1)
            for index in np.flatnonzero(alarms[fired[0]]):
                first_checks[rules[index].code] = first_checks.get(rules[index].code, 0) + 1
    return SimulationResult(
        feedback_share=feedback_share, streams=streams, films_per_stream=length,
        alarmed=len(alarm_at) / streams, median_films_to_alarm=float(np.median(alarm_at)) if alarm_at else None,
        first_checks=dict(sorted(first_checks.items())),
    )


EXAMPLE = """example:
    python -m ml monitor --model runs/my-model
    python -m ml monitor --model ml/artifacts/production --simulate --subset test --out runs/monitor.json
"""


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m ml monitor", description=__doc__.splitlines()[0], epilog=EXAMPLE,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    add_model_and_data_arguments(parser, model_help="artifact folder with split.json",
                                 data_help=SPLIT_DATA_ROOT_HELP, data_required=False)
    parser.add_argument("--simulate", action="store_true",
                        help="no change to the artifact: replay --subset as a site's stream and measure the monitor")
    parser.add_argument("--subset", default="test", choices=("test", "loso"))
    parser.add_argument("--feedback", type=float, nargs="+", default=[1.0, 0.25, 0.1, 0.0],
                        help="with --simulate: shares of films that get clinician feedback")
    parser.add_argument("--streams", type=int, default=200, help="with --simulate: random orders per feedback share")
    parser.add_argument("--length", type=int, default=None,
                        help="with --simulate: films per stream, drawn with replacement (default: each film once)")
    parser.add_argument("--covid-share", type=float, default=None,
                        help="with --simulate: draw each film as COVID-19 with this probability (with replacement; "
                             "a site with another share of COVID-19 than the subset)")
    parser.add_argument("--alpha", type=float, default=DEFAULT_ALPHA)
    parser.add_argument("--max-false-alerts", type=float, default=DEFAULT_MAX_FALSE_ALERTS,
                        help="with --simulate: the site's limit on the false-alert share")
    parser.add_argument("--max-prevalence", type=float, default=DEFAULT_MAX_PREVALENCE,
                        help="with --simulate: the site's highest share of COVID-19 films (0: no alert-rate check)")
    parser.add_argument("--out", type=Path, default=None,
                        help="with --simulate: write the results here (JSON) and the checks beside it (PNG)")
    parser.add_argument("--quiet", action="store_true", help="no progress bars")
    args = parser.parse_args(argv)
    data = args.data or default_data_dir()
    split_file = args.model / "split.json"
    if not split_file.is_file():
        print(f"error: {split_file} not found: the reference needs the artifact's own validation films",
              file=sys.stderr)
        return 2
    predictor = Predictor.load(args.model)
    progress = not args.quiet
    try:
        if not args.simulate:
            val = select_samples(data=data, manifest=None, split_file=split_file, subset="val")
            reference = reference_from_films(films_from_samples(predictor, val, progress=progress, desc="validation"),
                                             class_names=predictor.class_names)
            add_reference(args.model, reference)
            print(f"{args.model}: reference from {reference.n} validation films stored in metadata.json")
            print(json.dumps(reference.to_dict(), indent=2))
            return 0
        reference = load_reference(predictor.metadata)
        if reference is None:
            print(f"error: {args.model} has no reference (run python -m ml monitor --model it first)",
                  file=sys.stderr)
            return 2
        samples = select_samples(data=data, manifest=None, split_file=split_file, subset=args.subset)
    except EvaluationError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    films = films_from_samples(predictor, samples, progress=progress, desc=args.subset)
    limits = Limits(min_sensitivity=predictor.metadata.target_sensitivity, max_false_alerts=args.max_false_alerts,
                    max_prevalence=args.max_prevalence or None)
    checks = run_checks(reference, films, limits=limits, alpha=args.alpha)
    site = {check.code: check.to_dict() for check in checks}
    results = simulate(reference, films, feedback_shares=args.feedback, streams=args.streams, limits=limits,
                       alpha=args.alpha, length=args.length, covid_share=args.covid_share)
    name = f"{predictor.metadata.name} {predictor.metadata.version}"
    for breach in reference_breaches(reference, limits):
        print(f"validation already breaks {breach.code}: {breach.reference_hits}/{breach.reference_n} "
              f"against the limit {breach.limit:.0%}; comparisons with validation cannot see this failure")
    print(f"{name}, {args.subset} films: {len(films)}, all with feedback:")
    print("| check | site | validation | p | status |")
    print("|---|---|---|---|---|")
    for check in site.values():
        p_value = "—" if check["p_value"] is None else f"{check['p_value']:.2g}"
        held_to = (f"limit {check['limit']:.0%}" if check["limit"] is not None
                   else f"{check['reference_hits']}/{check['reference_n']}")
        if check["strata"] is not None and check["site_n"]:
            held_to += f" ({check['reference_rate']:.1%} at the site's mix of predicted classes)"
        print(f"| {check['code']} | {check['site_hits']}/{check['site_n']} | {held_to} | {p_value} | "
              f"{check['status']} |")
    length = args.length or len(films)
    share = "" if args.covid_share is None else f", {args.covid_share:.0%} of them COVID-19"
    print(f"\nStreams of {length} films{share}, monitor after every film, alpha {args.alpha}:")
    print("| feedback on | streams alarmed | median films to alarm | first alarms |")
    print("|---|---|---|---|")
    for result in results:
        median = "—" if result.median_films_to_alarm is None else f"{result.median_films_to_alarm:.0f}"
        firsts = ", ".join(f"{code} {count}" for code, count in result.first_checks.items()) or "—"
        print(f"| {result.feedback_share:.0%} | {result.alarmed:.1%} | {median} | {firsts} |")
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps({
            "model": name, "sha256": predictor.metadata.sha256, "subset": args.subset, "n": len(films),
            "alpha": args.alpha, "stream_length": length, "covid_share": args.covid_share,
            "limits": {**asdict(limits), "max_alert_rate": limits.max_alert_rate},
            "reference": reference.to_dict(),
            "reference_breaches": [asdict(breach) for breach in reference_breaches(reference, limits)],
            "all_films_with_feedback": site,
            "simulations": [asdict(result) for result in results],
        }, indent=2) + "\n")

        plot_monitoring(checks, args.out.with_suffix(".png"))
    return 0
