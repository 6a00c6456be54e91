"""The ``coverage-planner`` command line (also ``python -m coverage``).

Every user error exits with status 2 and one line on stderr naming the file or field, the
value and the fix; ``--debug`` shows the traceback instead. ``verify`` exits with status 3
when the plan breaks a rule. Outputs are written atomically, so a refused command leaves no
file behind.
"""
from __future__ import annotations

import argparse
import math
import sys
import time
from pathlib import Path

from . import __version__
from .errors import CoverageError

PROG = "coverage-planner"
EXIT_VIOLATION = 3      # verify: the plan breaks a rule (batch: a plan breaks a rule)
EXIT_SCAN_FAILED = 4    # batch: some scans could not be planned (the others were)
EXIT_CODES = ("exit status: 0 done; 1 internal error (a bug); 2 user error (bad input or option, one line on "
              f"stderr); {EXIT_VIOLATION} verify: the plan breaks a rule; {EXIT_SCAN_FAILED} batch: some scans failed")


def _face_args(parser: argparse.ArgumentParser, protocol: bool = True, edge_help: str | None = None) -> None:
    group = parser.add_argument_group("face (default: the bundled canonical face)")
    group.add_argument("--mesh", metavar="PATH", help="scan mesh (OBJ, PLY, STL, GLB, OFF)")
    group.add_argument("--landmarks", metavar="PATH",
                       help="468 MediaPipe landmarks of the scan (.npy or .json, the scan's frame and units)")
    group.add_argument("--units", default="auto", choices=["auto", "mm", "cm", "m", "in"],
                       help="units of the mesh and landmarks (default: detected from the face width)")
    group.add_argument("--edge-mm", type=float, default=1.0, metavar="MM",
                       help=edge_help or "working resolution: refined edge length (default 1.0 mm)")
    if protocol:
        parser.add_argument("--protocol", metavar="TOML", help="protocol file (default: the bundled protocol)")


def _saved_plan_args(parser: argparse.ArgumentParser) -> None:
    """The saved plan a command reads, and the face it was planned on (a scan's)."""
    parser.add_argument("plan", metavar="PLAN.json")
    _face_args(parser, protocol=False,
               edge_help="with --mesh: the resolution the plan was made with (default 1.0 mm); without --mesh "
                         "the bundled face is rebuilt at the plan's own resolution")


def _load_face(args):
    from .face import Face

    if args.mesh is None:
        if args.landmarks is not None:
            raise CoverageError("--landmarks given without --mesh; pass the scan with --mesh PATH")
        return Face.default(args.edge_mm)
    return Face.load(args.mesh, args.landmarks, units=args.units, edge_mm=args.edge_mm)


def _load_protocol(args):
    from .protocol import Protocol

    return Protocol.default() if args.protocol is None else Protocol.load(args.protocol)


def cmd_zones(args) -> int:
    from .fileio import check_output
    from .viz import FIGURE_SUFFIXES, save_figure, zone_map_figure
    from .zones import ZoneMap

    if args.png:
        check_output(args.png, FIGURE_SUFFIXES)
    protocol = _load_protocol(args)
    start = time.perf_counter()
    face = _load_face(args)
    zones = ZoneMap.default(face, protocol)
    elapsed = time.perf_counter() - start
    for note in face.notes:
        print(f"note: {note}", file=sys.stderr)
    print(f"{face!r}; zones built in {elapsed:.2f} s")
    print(f"{'zone':<20}{'treatable cm2':>14}{'target /cm2':>13}{'cap /cm2':>10}  devices")
    total = 0.0
    for name in zones.names:
        dose = zones.dose(name)
        area = zones.area_cm2(name)
        total += area
        print(f"{name:<20}{area:14.1f}{dose.target_per_cm2:13.0f}{dose.cap_per_cm2:10.0f}  {', '.join(dose.devices)}")
    print(f"{'total':<20}{total:14.1f}")
    for exc in zones.exclusions.values():
        margins = ", ".join(f"{part} {m:.1f} mm" for part, m in exc.margins_mm)
        print(f"exclusion {exc.name}: keep-out margin on the skin {margins}")
    if args.png:
        save_figure(zone_map_figure(zones), args.png)
        print(f"wrote {args.png}")
    return 0


def cmd_plan(args) -> int:
    from .fileio import check_output
    from .plan import plan, report_text
    from .tasks import thread_count

    check_output(args.out, (".json",))
    threads = thread_count(args.threads)     # a bad count refused before the face is loaded
    protocol = _load_protocol(args)
    start = time.perf_counter()
    face = _load_face(args)
    result = plan(face, protocol, device=args.device, start_corner=args.start_corner, threads=threads)
    elapsed = time.perf_counter() - start
    for note in face.notes:
        print(f"note: {note}", file=sys.stderr)
    json_path, npz_path = result.save(args.out)
    print(report_text(result.to_json()))
    print(f"planned in {elapsed:.1f} s; wrote {json_path} and {npz_path}")
    return 0


def cmd_report(args) -> int:
    from .plan import report_text
    from .planio import read_plan_json

    print(report_text(read_plan_json(args.plan)))
    return 0


def cmd_verify(args) -> int:
    from .fileio import atomic_path, check_output
    from .planio import check_not_the_plan
    from .verify import verify

    if args.json:
        check_output(args.json, (".json",))
        check_not_the_plan(args.json, args.plan, "--json", "verified")
    result = verify(args.plan, face=_plan_face(args))
    if args.json:
        import json

        with atomic_path(args.json) as tmp:
            tmp.write_text(json.dumps(_finite(result.as_dict()), indent=1, allow_nan=False) + "\n", encoding="utf-8")
    print(result.text())
    if args.json:
        print(f"wrote {args.json}")
    if result.ok:
        return 0
    for v in result.violations:
        message = one_line(v.message)
        message = message[len(v.rule) + 2:] if message.startswith(f"{v.rule}: ") else message
        print(f"{PROG}: violation: {v.rule}: {message}", file=sys.stderr)
    return EXIT_VIOLATION


def _finite(value):
    """``value`` (JSON-like) with every number that is not finite as None (JSON null): a
    measure of a broken plan can be infinite (a stroke no move reaches)."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_finite(v) for v in value]
    return value


def _plan_face(args):
    """The face a command on a saved plan needs: the scan given with --mesh, else None (the
    bundled face, rebuilt at the plan's resolution)."""
    if args.mesh is None:
        if args.landmarks is not None:
            _load_face(args)   # refuses --landmarks without --mesh
        return None
    face = _load_face(args)
    for note in face.notes:
        print(f"note: {note}", file=sys.stderr)
    return face


def cmd_export(args) -> int:
    from . import export
    from .planio import load_plan

    fmt = export.check_trajectory_output(args.out, args.format)
    rate = export.check_rate(args.rate)
    smooth_mm, smooth_deg = export.check_smoothing(args.smooth_mm, args.smooth_deg)
    plan = load_plan(args.plan, face=_plan_face(args))
    start = time.perf_counter()
    traj = export.trajectory(plan, rate, source=str(args.plan), smooth_mm=smooth_mm, smooth_deg=smooth_deg)
    export.write_trajectory(traj, args.out, fmt)
    print(f"trajectory: {len(traj)} samples at {rate:g} Hz; session {traj.duration_s:.1f} s (plan {plan.time_s:.1f} s, "
          f"+{traj.duration_s - plan.time_s:.1f} s to keep speeds, accelerations and turn rates within the limits); "
          f"{int(traj.stamps.sum())} pen stamps")
    print(f"exported in {time.perf_counter() - start:.1f} s; wrote {args.out} ({fmt})")
    return 0


def cmd_batch(args) -> int:
    from .batch import SUMMARY_NAME, run_batch, summary_table

    rows = run_batch(args.scans_dir, args.out, workers=args.workers, scheduler=args.scheduler,
                     progress=not args.no_progress and sys.stderr.isatty(), protocol_path=args.protocol,
                     device=args.device, units=args.units, edge_mm=args.edge_mm,
                     log=lambda line: print(f"{PROG}: {line}", file=sys.stderr))
    print(summary_table(rows))
    print(f"wrote {sum(r['plan'] is not None for r in rows)} plans and {Path(args.out) / SUMMARY_NAME}")
    if any(r["status"] == "violation" for r in rows):
        return EXIT_VIOLATION
    return EXIT_SCAN_FAILED if any(r["status"] == "failed" for r in rows) else 0


def cmd_show(args) -> int:
    from pathlib import Path

    from .fileio import check_output
    from .page import PAGE_SUFFIXES, write_page
    from .planio import check_not_the_plan, load_plan
    from .viz import (ANIMATION_SUFFIXES, FIGURE_SUFFIXES, HANDOUT_SUFFIXES, handout_pdf, plan_figure, save_figure,
                      session_animation)

    outputs = [(args.png, FIGURE_SUFFIXES, lambda p, o: save_figure(plan_figure(p), o)),
               (args.html, PAGE_SUFFIXES, write_page),
               (args.gif, ANIMATION_SUFFIXES, lambda p, o: session_animation(p, o, frames=args.frames, fps=args.fps)),
               (args.pdf, HANDOUT_SUFFIXES, handout_pdf)]
    if not any(out for out, _, _ in outputs):
        raise CoverageError("show: say what to draw: --png OUT.png, --html OUT.html, --gif OUT.gif and/or --pdf OUT.pdf")
    if args.frames < 2 or not args.fps > 0:
        raise CoverageError(f"show: --frames {args.frames} and --fps {args.fps:g}: use at least 2 frames and a "
                            "positive rate")
    for (out, suffixes, _), option in zip(outputs, ("--png", "--html", "--gif", "--pdf")):
        if out:
            check_output(out, suffixes)
            check_not_the_plan(out, args.plan, option, "drawn")
    plan = load_plan(args.plan, face=_plan_face(args))
    for out, _, make in outputs:
        if out:
            start = time.perf_counter()
            make(plan, out)
            print(f"wrote {out} ({Path(out).stat().st_size / 1e6:.1f} MB, {time.perf_counter() - start:.1f} s)")
    return 0


def cmd_resume(args) -> int:
    from .resume import resume_files
    from .verify import verify

    result, paths = resume_files(args.plan, args.delivered, args.out, face=_plan_face(args))
    print(result.report.text())
    print(f"wrote {paths[0]} and {paths[1]}")
    check = verify(result.report.union)
    print(f"delivered + remaining: {'every rule holds' if check.ok else 'breaks a rule'} "
          f"({len(check.checks) - len(check.violations)} of {len(check.checks)} checks passed)")
    if check.ok:
        return 0
    for v in check.violations:
        print(f"{PROG}: violation: {one_line(v.message)}", file=sys.stderr)
    return EXIT_VIOLATION


def cmd_protocol(args) -> int:
    from .protocol import Protocol

    if args.default and args.check:
        raise CoverageError(f"protocol: --default and --check {args.check} given together; give one: --default "
                            "prints the bundled protocol, --check FILE validates a file")
    if args.default:
        sys.stdout.write(Protocol.default_text())
        return 0
    if args.check:
        protocol = Protocol.load(args.check)
        print(f"{args.check}: valid protocol {protocol.name!r} ({len(protocol.zones)} zones, "
              f"{len(protocol.lesions)} lesions)")
        return 0
    raise CoverageError("protocol: say what to do: --default prints the bundled protocol, "
                        "--check FILE validates a protocol file")


def cmd_bench(args) -> int:
    from . import bench
    from .fileio import check_output

    if args.json:
        check_output(args.json, (".json",))
    doc = bench.run(args.quick, args.repeats, progress=bench.print_progress)
    print(bench.report(doc))
    for problem in bench.validate(doc):
        print(f"{PROG}: warning: {problem}", file=sys.stderr)
    if args.json:
        bench.write_json(doc, args.json)
        print(f"wrote {args.json}")
    return 0


def one_line(exc: BaseException) -> str:
    """An exception's message on one line (library messages may wrap)."""
    return " ".join(str(exc).split())


class OneLineParser(argparse.ArgumentParser):
    """An argument parser whose errors are one line (the usage is for --help)."""

    def error(self, message):
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def build_parser() -> argparse.ArgumentParser:
    parser = OneLineParser(
        prog=PROG,
        description="Roller pass patterns and pen stroke paths over a 3D face: target puncture "
                    "density everywhere, never over a cap, clear of eyes, lips and nostrils.",
        epilog=EXIT_CODES)
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    parser.add_argument("--debug", action="store_true", help="show tracebacks on errors")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=OneLineParser)
    sub.required = True

    zones = sub.add_parser("zones", help="build the zone map of a face and draw it",
                           description="Build the treatment zones and exclusions of a face, print their "
                                       "areas, and draw the zone map (chart view and shaded front view).")
    _face_args(zones)
    zones.add_argument("--png", metavar="OUT", help="write the zone map picture (PNG, SVG or PDF by suffix)")
    zones.set_defaults(func=cmd_zones)

    planner = sub.add_parser("plan", help="plan a session and write PLAN.json and PLAN.npz",
                             description="Plan a session over a face: roller passes where the protocol allows the "
                                         "roller and the drum conforms, pen strokes for the rest and touch-ups (device "
                                         "auto), or one device only; write PLAN.json (strokes, transitions, summary) "
                                         "and PLAN.npz beside it (every puncture).")
    _face_args(planner)
    planner.add_argument("--device", default="auto", choices=["auto", "roller", "pen"],
                         help="auto (default): roller, then pen and touch-ups; or one device only")
    planner.add_argument("--start-corner", choices=["auto", "bottom_left", "bottom_right", "top_left", "top_right"],
                         help="where each zone's sweeps start (the subject's left/right; default: the protocol's)")
    planner.add_argument("--out", required=True, metavar="PLAN.json", help="the plan to write (PLAN.npz goes beside it)")
    planner.add_argument("--threads", type=int, metavar="N",
                         help="threads for the plan's independent pieces (default: $COVERAGE_THREADS, else the "
                              "cores available, at most 2); the plan is the same on any number")
    planner.set_defaults(func=cmd_plan)

    report = sub.add_parser("report", help="print a plan's per-zone table",
                            description="Print the per-zone dose table of a saved plan, where the roller was "
                                        "refused, and the pen's settings in each zone it treats.")
    report.add_argument("plan", metavar="PLAN.json")
    report.set_defaults(func=cmd_report)

    check = sub.add_parser("verify", help="check a saved plan against every safety and dose rule",
                           description="Check a saved plan (PLAN.json, PLAN.npz beside it) against every rule, "
                                       "measuring again from its strokes and punctures: exclusion margins, caps, "
                                       "depths, devices, unobserved skin, contact and transit. Prints the "
                                       "recomputed per-zone dose and one line per rule; each broken rule is also "
                                       "one line on stderr.",
                           epilog=f"exit status: 0 every rule holds; {EXIT_VIOLATION} the plan breaks a rule; "
                                  "2 user error (missing or unreadable plan, bad option); 1 internal error")
    _saved_plan_args(check)
    check.add_argument("--json", metavar="OUT", help="also write the verdict as JSON (written after the checks ran)")
    check.set_defaults(func=cmd_verify)

    exporter = sub.add_parser(
        "export", help="write a plan's session as timed robot tool poses (CSV, NPZ or JSON)",
        description="Sample the whole session at a fixed rate as tool poses: time, position (mm), orientation "
                    "quaternion (qw, qx, qy, qz; tool z into the skin, x along the roller's travel or the face's up for "
                    "the pen), speed, acceleration, state "
                    "(0 transit, 1 approach, 2 contact, 3 firing, 4 retract), device, stroke, depth, needle length and "
                    "stamp rate. The timing is planned again so speeds, accelerations and turn rates stay within the "
                    "protocol's limits.")
    _saved_plan_args(exporter)
    exporter.add_argument("--out", required=True, metavar="OUT", help="the trajectory file (.csv, .npz or .json)")
    exporter.add_argument("--format", choices=["csv", "npz", "json"], help="default: from the suffix of --out")
    exporter.add_argument("--rate", type=float, default=250.0, metavar="HZ",
                          help="samples per second (default 250; 50 to 10000)")
    exporter.add_argument("--smooth-mm", type=float, default=0.1, metavar="MM",
                          help="how far the contact path may move to stop the tool chasing a scan's noise, along "
                               "the normal and sideways, never along the travel (default 0.1; 0 to 0.25; 0: the "
                               "plan's own samples)")
    exporter.add_argument("--smooth-deg", type=float, default=None, metavar="DEG",
                          help="how far the tool axis may tilt from the normal (default 2 when smoothing, else 0; "
                               "0 to 5)")
    exporter.set_defaults(func=cmd_export)

    batch = sub.add_parser("batch", help="plan every scan of a folder (local workers or a Dask cluster)",
                           description="Plan every scan of SCANS_DIR: each mesh NAME.ply (or .obj, .stl, .glb, "
                                       ".gltf, .off) with its 468 landmarks beside it as NAME.landmarks.npy or "
                                       "NAME.landmarks.json. Each plan goes to DIR/NAME.json + DIR/NAME.npz and is "
                                       "verified; DIR/batch_summary.json holds one row per scan. A scan that fails "
                                       "is reported (one line on stderr) and the batch goes on.",
                           epilog=f"exit status: 0 every scan planned and verified; {EXIT_SCAN_FAILED} some scans "
                                  f"failed (the others were planned); {EXIT_VIOLATION} a plan breaks a rule; "
                                  "2 user error (no scans, bad option or protocol: nothing planned); 1 internal error")
    batch.add_argument("scans_dir", metavar="SCANS_DIR", help="folder of scans (NAME.ply + NAME.landmarks.npy)")
    batch.add_argument("--out", required=True, metavar="DIR", help="folder for the plans (created if missing)")
    batch.add_argument("--workers", type=int, default=1, metavar="N",
                       help="scans planned at once on this machine, one process each (default 1)")
    batch.add_argument("--scheduler", metavar="ADDRESS",
                       help='plan on a Dask cluster instead (tcp://HOST:8786; pip install ".[distributed]"); its '
                            "workers must see SCANS_DIR and DIR at the same paths")
    batch.add_argument("--device", default="auto", choices=["auto", "roller", "pen"],
                       help="auto (default): roller, then pen and touch-ups; or one device only")
    batch.add_argument("--units", default="auto", choices=["auto", "mm", "cm", "m", "in"],
                       help="units of every scan (default: detected from each face's width)")
    batch.add_argument("--edge-mm", type=float, default=1.0, metavar="MM",
                       help="working resolution: refined edge length (default 1.0 mm)")
    batch.add_argument("--protocol", metavar="TOML", help="protocol file (default: the bundled protocol)")
    batch.add_argument("--no-progress", action="store_true", help="no progress bar (it shows only on a terminal)")
    batch.set_defaults(func=cmd_batch)

    show = sub.add_parser(
        "show", help="draw a plan for trainers: picture, offline 3D page, animation, printable handout",
        description="Draw a saved plan: a PNG (front view with the passes in order and the density heat map with "
                    "the per-zone table), a self-contained offline HTML page (3D face coloured by density, strokes, "
                    "toggles per device, zone and direction), a GIF of the session pass by pass, and a PDF handout "
                    "(one page per zone: pattern, order, depth, passes, dose).")
    _saved_plan_args(show)
    show.add_argument("--png", metavar="OUT", help="the overview picture (PNG, SVG or PDF by suffix)")
    show.add_argument("--html", metavar="OUT.html", help="the offline 3D page")
    show.add_argument("--gif", metavar="OUT.gif", help="the session animation")
    show.add_argument("--pdf", metavar="OUT.pdf", help="the printable handout, one page per zone")
    show.add_argument("--frames", type=int, default=48, help="animation frames (default 48)")
    show.add_argument("--fps", type=float, default=6.0, help="animation frames per second (default 6)")
    show.set_defaults(func=cmd_show)

    resume = sub.add_parser(
        "resume", help="plan what completes a session after an interruption",
        description="Given what was delivered before an interruption (a log of stroke ids with the fraction done, "
                    "or of the punctures delivered), write the plan that completes the session: the rest of the "
                    "strokes, or pen strokes for the skin still under its band; nothing at dose is treated again and "
                    "no window goes over its cap. What was delivered plus the remaining plan is verified.",
        epilog=f"exit status: 0 done; {EXIT_VIOLATION} delivered + remaining breaks a rule; 2 user error; "
               "1 internal error. Logs: JSON {\"strokes\": {\"12\": 1.0, \"13\": 0.4}} or "
               "{\"punctures\": [[x, y, z], ...]}, CSV stroke_id,fraction or x,y,z, or .npy (k, 3) mm")
    _saved_plan_args(resume)
    resume.add_argument("--delivered", required=True, metavar="LOG", help="what was delivered (.json, .csv or .npy)")
    resume.add_argument("--out", required=True, metavar="OUT.json", help="the remaining plan (OUT.npz goes beside it)")
    resume.set_defaults(func=cmd_resume)

    proto = sub.add_parser("protocol", help="print or check a protocol",
                           description="Print the bundled default protocol (TOML), or validate a protocol file.")
    proto.add_argument("--default", action="store_true", help="print the bundled default protocol")
    proto.add_argument("--check", metavar="TOML", help="validate a protocol file and summarise it")
    proto.set_defaults(func=cmd_protocol)

    from .bench import add_arguments as bench_arguments

    timing = sub.add_parser("bench", help="time the planner end to end, its kernels and its scaling",
                            description="Benchmark suite: the auto plan stage by stage on the bundled face and a "
                                        "100k-vertex synthetic scan (cold caches every run), every Cython kernel "
                                        "against its NumPy reference, scaling with face resolution and target "
                                        "density (growth exponents), treatment time against the physical "
                                        "minimum, and the speed targets. Prints tables (progress on stderr); "
                                        "--json writes every figure with the machine and versions.",
                            epilog="exit status: 0 done (a missed target is reported, not an error); 2 bad "
                                   "option or output path; 1 internal error")
    bench_arguments(timing)
    timing.set_defaults(func=cmd_bench)
    return parser


INPUTS = (("plan", "plan"), ("mesh", "mesh"), ("landmarks", "landmarks"), ("protocol", "protocol"),
          ("delivered", "delivery log"))    # the attributes of a command's input files, and what each is
OUTPUTS = (("out", "--out"), ("json", "--json"), ("png", "--png"), ("html", "--html"), ("gif", "--gif"),
           ("pdf", "--pdf"))               # ... and of its output files, with their options


def check_outputs_not_inputs(args) -> None:
    """Refuse an output file that is one of the command's input files (a saved plan's JSON or
    the NPZ beside it; a mesh, landmarks, protocol or delivery log), before anything is read:
    the output would replace it. ``plan`` and ``resume`` also write an NPZ beside their
    ``--out``; ``batch``'s ``--out`` is a folder of new files."""
    if args.func is cmd_batch:
        return
    inputs = []
    for attr, what in INPUTS:
        path = getattr(args, attr, None)
        if isinstance(path, (str, Path)) and str(path):
            inputs.append((Path(path), what))
            if attr == "plan":
                inputs.append((Path(path).with_suffix(".npz"), "plan's arrays"))
    for attr, option in OUTPUTS:
        out = getattr(args, attr, None)
        if not isinstance(out, (str, Path)) or not str(out):
            continue
        written = [Path(out)]
        if attr == "out" and args.func in (cmd_plan, cmd_resume):
            written.append(Path(out).with_suffix(".npz"))
        for path in written:
            for source, what in inputs:
                if path.resolve() == source.resolve():
                    raise CoverageError(f"{path}: {option} would overwrite the {what} being read ({source}); give "
                                        "another file name")


def main(argv=None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        check_outputs_not_inputs(args)
        return args.func(args)
    except CoverageError as exc:
        if args.debug:
            raise
        print(f"{PROG}: error: {one_line(exc)}", file=sys.stderr)
        return 2
    except BrokenPipeError:
        # the reader went away (e.g. piped into head): stop quietly, as Unix tools do
        import os
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 141
    except KeyboardInterrupt:
        print(f"{PROG}: interrupted", file=sys.stderr)
        return 130
    except Exception as exc:  # a bug, not a user error: say so, keep it to one line
        if args.debug:
            raise
        print(f"{PROG}: internal error: {type(exc).__name__}: {one_line(exc)} (run with --debug for the traceback)",
              file=sys.stderr)
        return 1


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
