"""The ``bioattn`` command line: parses arguments, then calls library code.

Every command has a Python equivalent (named in its ``--help``). Errors in the input end the
command with ``error: <one line>`` and exit status 2, without a traceback.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from typing import Callable, Sequence

from .errors import BioattnError

# Each entry adds one sub-command: ``add(subparsers)`` creates its parser and sets
# ``func=<callable taking the parsed args>``.
COMMANDS: list[Callable[[argparse._SubParsersAction], None]] = []


def command(add: Callable[[argparse._SubParsersAction], None]):
    COMMANDS.append(add)
    return add


def _print_json(obj) -> None:
    print(json.dumps(obj, indent=2, default=str))


# ------------------------------------------------------------------------------------------
# models
# ------------------------------------------------------------------------------------------
@command
def _models(sub):
    p = sub.add_parser("models", help="list bioattn's registered models with parameter counts",
                       description="List bioattn's models (Python: bioattn.models.list_models).")
    p.add_argument("pattern", nargs="?", default="", help="only names containing this text")
    p.add_argument("--num-classes", type=int, default=None,
                   help="count parameters for this many classes (default: each model's own)")
    p.set_defaults(func=_run_models)


def _run_models(args) -> int:
    from .models import count_parameters, create_model, list_models

    names = list_models(args.pattern)
    if not names:
        raise BioattnError(f"no bioattn model matches '{args.pattern}'")
    width = max(len(n) for n in names)
    kwargs = {} if args.num_classes is None else {"num_classes": args.num_classes}
    for name in names:
        model = create_model(name, **kwargs)
        print(f"{name:<{width}}  {count_parameters(model) / 1e6:9.2f}M")
    return 0


# ------------------------------------------------------------------------------------------
# train
# ------------------------------------------------------------------------------------------
def _key_values(items: list[str] | None) -> dict:
    """``key=value`` pairs; values parsed as JSON when possible (numbers, booleans, lists)."""
    out = {}
    for item in items or []:
        if "=" not in item:
            raise BioattnError(f"expected key=value, got '{item}'")
        key, value = item.split("=", 1)
        try:
            out[key] = json.loads(value)
        except json.JSONDecodeError:
            out[key] = value
    return out


def _on_off(value: str) -> bool:
    if value.lower() in ("1", "true", "yes", "on"):
        return True
    if value.lower() in ("0", "false", "no", "off"):
        return False
    raise argparse.ArgumentTypeError(f"expected on/off, got '{value}'")


@command
def _train(sub):
    p = sub.add_parser(
        "train", help="train a model (DeiT recipe; torchrun for several processes)",
        description="Train a model on the embedded data or an ImageNet-style folder "
        "(Python: bioattn.train.train(TrainConfig(...))). Settings left unset come from the "
        "recipe: 'deit' (SPEC defaults) for folders, 'small' for the embedded data. "
        "Several GPUs/nodes: torchrun --nproc_per_node=N -m bioattn train ...",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    p.add_argument("--model", help="registered model name (required unless --resume)")
    p.add_argument("--data", default="embedded", help="'embedded', 'embedded:pair', 'embedded:<opts>' or a folder with train/ and val/")
    p.add_argument("--output", help="run directory (default runs/<model>-<time>)")
    p.add_argument("--resume", help="run directory to continue")
    p.add_argument("--recipe", default="auto", help="auto, deit or small")
    p.add_argument("--model-arg", action="append", metavar="KEY=VALUE", help="extra model constructor argument (repeatable)")
    p.add_argument("--img-size", type=int)
    p.add_argument("--epochs", type=int)
    p.add_argument("--batch-size", type=int, default=128, help="images per process per step")
    p.add_argument("--lr", type=float, help="learning rate (default: base-lr x global batch / 512)")
    p.add_argument("--base-lr", type=float)
    p.add_argument("--min-lr", type=float)
    p.add_argument("--warmup-lr", type=float)
    p.add_argument("--warmup-epochs", type=int)
    p.add_argument("--weight-decay", type=float)
    p.add_argument("--opt", default="adamw", help="any timm optimizer name")
    p.add_argument("--sched", default="cosine", help="any timm scheduler name")
    p.add_argument("--clip-grad", type=float, help="clip gradient norm")
    p.add_argument("--smoothing", type=float, help="label smoothing")
    p.add_argument("--mixup", type=float, help="mixup alpha (0 off)")
    p.add_argument("--cutmix", type=float, help="cutmix alpha (0 off)")
    p.add_argument("--aa", help="RandAugment policy, e.g. rand-m9-mstd0.5-inc1 ('none' off)")
    p.add_argument("--color-jitter", type=float)
    p.add_argument("--reprob", type=float, help="random erasing probability")
    p.add_argument("--hflip", type=float, help="horizontal flip probability")
    p.add_argument("--repeated-aug", type=_on_off, metavar="on|off")
    p.add_argument("--drop-path", type=float)
    p.add_argument("--model-ema", type=_on_off, metavar="on|off")
    p.add_argument("--model-ema-decay", type=float)
    p.add_argument("--amp", type=_on_off, default=True, metavar="on|off", help="mixed precision on CUDA")
    p.add_argument("--amp-dtype", default="float16", choices=["float16", "bfloat16"])
    p.add_argument("--device", default="auto", help="auto, cpu or cuda")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--workers", type=int, default=0, help="data-loader worker processes per process")
    p.add_argument("--limit-train", type=int, help="use only the first N training images")
    p.add_argument("--limit-val", type=int, help="use only the first N validation images")
    p.add_argument("--skip-bad-images", action="store_true", help="skip and count unreadable images")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.set_defaults(func=_run_train)


def _run_train(args) -> int:
    from .train import TrainConfig, train

    if not args.model and not args.resume:
        raise BioattnError("--model is required (or --resume RUN_DIR)")
    cfg = TrainConfig(
        model=args.model or "", data=args.data, output=args.output, recipe=args.recipe,
        model_args=_key_values(args.model_arg), img_size=args.img_size, epochs=args.epochs,
        batch_size=args.batch_size, base_lr=args.base_lr, lr=args.lr, min_lr=args.min_lr,
        warmup_lr=args.warmup_lr, warmup_epochs=args.warmup_epochs, weight_decay=args.weight_decay,
        opt=args.opt, sched=args.sched, clip_grad=args.clip_grad, smoothing=args.smoothing,
        mixup=args.mixup, cutmix=args.cutmix, aa=args.aa, color_jitter=args.color_jitter,
        reprob=args.reprob, hflip=args.hflip, repeated_aug=args.repeated_aug,
        drop_path=args.drop_path, model_ema=args.model_ema, model_ema_decay=args.model_ema_decay,
        amp=args.amp, amp_dtype=args.amp_dtype, device=args.device, seed=args.seed,
        workers=args.workers, resume=args.resume, limit_train=args.limit_train,
        limit_val=args.limit_val, skip_bad_images=args.skip_bad_images,
        progress=not args.no_progress,
    )
    result = train(cfg)
    print(f"run directory: {result['run_dir']} (best val top-1 {result['best_val_top1']:.2f}%)")
    return 0


# ------------------------------------------------------------------------------------------
# demo
# ------------------------------------------------------------------------------------------
@command
def _demo(sub):
    p = sub.add_parser(
        "demo", help="train and compare all systems on the embedded data; write a report page",
        description="Train the micro ViT, AbSViT, RVT (self-attention and VARS-D), RS-RNN and FF-CNN "
        "on the embedded data, evaluate clean accuracy, corruptions, FGSM/PGD (per glimpse for "
        "glimpse models), attention on the object and AbSViT's steering, and write index.html, "
        "report.md and results.json (Python: bioattn.demo.run_demo). Trained checkpoints are "
        "cached: a second run only evaluates.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    p.add_argument("--out", default="demo-report", help="report directory")
    p.add_argument("--quick", action="store_true", help="tiny budget (about two minutes)")
    p.add_argument("--retrain", action="store_true", help="train again even when checkpoints are cached")
    p.add_argument("--models", help="comma-separated subset (labels or model names)")
    p.add_argument("--no-progress", action="store_true")
    p.set_defaults(func=_run_demo)


def _run_demo(args) -> int:
    from .demo import run_demo

    models = [m.strip() for m in args.models.split(",")] if args.models else None
    summary = run_demo(args.out, quick=args.quick, retrain=args.retrain, models=models,
                       progress=not args.no_progress)
    print(f"demo finished in {summary['total_seconds']:.0f} s; open {args.out}/index.html")
    return 0


def _one_line(exc: BaseException) -> str:
    """The message of ``exc`` on one line (errors re-raised from data-loader workers carry the
    worker's traceback; their last line is the original message)."""
    lines = [line for line in str(exc).splitlines() if line.strip()]
    if not lines:
        return type(exc).__name__
    last = lines[-1]
    for prefix in ("bioattn.errors.BioattnError: ", "bioattn.errors.NonFiniteLossError: "):
        if last.startswith(prefix):
            return last[len(prefix):]
    return lines[0] if len(lines) == 1 else last


# ------------------------------------------------------------------------------------------
# eval, report
# ------------------------------------------------------------------------------------------
@command
def _eval(sub):
    p = sub.add_parser(
        "eval", help="evaluate a checkpoint: clean accuracy, corruptions, ImageNet-A/R/Sketch, attacks",
        description="Evaluate a model on several suites and write every figure to a JSON file, "
        "with a Markdown table and plots next to it (Python: bioattn.evaluate.run_suites, or "
        "bioattn.evaluate.evaluate_checkpoint for a checkpoint). Suites: clean, imagenet-c, "
        "corruptions, imagenet-a, imagenet-r, imagenet-sketch, fgsm, pgd, autoattack, steering, "
        "fixations, glimpses.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    p.add_argument("--checkpoint", help="checkpoint directory, .safetensors or .pth")
    p.add_argument("--model", help="model name (optional when the checkpoint has metadata)")
    p.add_argument("--model-arg", action="append", metavar="KEY=VALUE",
                   help="model constructor argument for checkpoints without metadata (repeatable)")
    p.add_argument("--data", help="'embedded', 'embedded:pair' or a folder with train/ and val/ "
                   "(needed by clean, corruptions and the attacks)")
    p.add_argument("--split", default="val", choices=["val", "test"])
    p.add_argument("--suite", default="clean", help="comma-separated suites")
    p.add_argument("--out", help="results JSON path (the .md table and .png plots go next to it)")
    p.add_argument("--img-size", type=int, help="input size (default: the checkpoint's)")
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--workers", type=int, default=min(8, os.cpu_count() or 1),
                   help="data-loader workers, and processes generating corruptions")
    p.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N")
    p.add_argument("--limit", type=int, help="evaluate on N images (spread evenly over each data set)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--steps", type=int, help="steps (glimpses, passes) a multi-step model runs")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    p.add_argument("--skip-bad-images", action="store_true", help="skip and count unreadable images")
    g = p.add_argument_group("corruptions and ImageNet benchmarks")
    g.add_argument("--imagenet-c", metavar="DIR", help="ImageNet-C root (<corruption>/<severity>/<wnid>/)")
    g.add_argument("--imagenet-a", metavar="DIR", help="ImageNet-A root (<wnid>/)")
    g.add_argument("--imagenet-r", metavar="DIR", help="ImageNet-R root (<wnid>/)")
    g.add_argument("--imagenet-sketch", metavar="DIR", help="ImageNet-Sketch root (<wnid>/)")
    g.add_argument("--corruptions", help="comma-separated subset of the 15 corruptions (default all)")
    g.add_argument("--severities", help="comma-separated subset of severities 1-5 (default all)")
    g.add_argument("--baseline-checkpoint", help="baseline model for the corruptions suite's mCE")
    g.add_argument("--baseline-model", help="baseline model name (when its checkpoint has no metadata)")
    g = p.add_argument_group("attacks (pixels in [0,1]; defaults are the official settings)")
    g.add_argument("--eps", default="1/255", help="comma-separated budgets, fractions allowed (e.g. 1/255,2e-3)")
    g.add_argument("--step-size", help="PGD step (default eps/2, i.e. 0.5/255 at eps 1/255)")
    g.add_argument("--attack-iters", type=int, default=5, help="PGD iterations")
    g.add_argument("--restarts", type=int, default=1, help="PGD random restarts")
    g.add_argument("--norm", default="Linf", choices=["Linf", "L2"])
    g.add_argument("--attack-step", type=int, help="attack the prediction at this step (1-based; default the final one)")
    g.add_argument("--eot", type=int, help="EOT samples per gradient; models that sample get an extra EOT run "
                   "(10 samples unless given)")
    g.add_argument("--autoattack-version", default="standard", choices=["standard", "rand"],
                   help="rand: the version for models that sample (EOT inside)")
    g = p.add_argument_group("attention")
    g.add_argument("--fixations", metavar="DIR", help="human fixation data set (MIT1003 or SALICON-like)")
    p.set_defaults(func=_run_eval)


def _run_eval(args) -> int:
    from .evaluate.report import markdown_report
    from .evaluate.suites import evaluate_checkpoint, parse_eps, parse_int_list

    step_size = parse_eps(args.step_size)[0] if args.step_size is not None else None
    results = evaluate_checkpoint(
        args.checkpoint, args.suite, model_name=args.model, model_args=_key_values(args.model_arg),
        data=args.data, split=args.split, img_size=args.img_size,
        baseline_checkpoint=args.baseline_checkpoint, baseline_model=args.baseline_model, out=args.out,
        batch_size=args.batch_size, workers=args.workers, device=args.device, limit=args.limit,
        seed=args.seed, progress=not args.no_progress, steps=args.steps,
        skip_bad_images=args.skip_bad_images, imagenet_c=args.imagenet_c, imagenet_a=args.imagenet_a,
        imagenet_r=args.imagenet_r, imagenet_sketch=args.imagenet_sketch,
        corruptions=[c.strip() for c in args.corruptions.split(",") if c.strip()] if args.corruptions else None,
        severities=parse_int_list(args.severities, "severities"),
        eps=parse_eps(args.eps), step_size=step_size, attack_iters=args.attack_iters,
        restarts=args.restarts, norm=args.norm, attack_step=args.attack_step, eot=args.eot,
        autoattack_version=args.autoattack_version, fixations=args.fixations,
    )
    print(markdown_report([results]), end="")
    for path in results.get("files", []):
        print(f"wrote {path}")
    return 0


@command
def _report(sub):
    p = sub.add_parser(
        "report", help="put several evaluation results side by side (table and plots)",
        description="Read results JSON files written by `bioattn eval` and write one Markdown table "
        "and one set of plots comparing the models (Python: bioattn.evaluate.report.write_report).",
    )
    p.add_argument("results", nargs="+", help="results JSON files")
    p.add_argument("--out", required=True, help="output directory")
    p.add_argument("--stem", default="report", help="file name stem of the outputs")
    p.set_defaults(func=_run_report)


def _run_report(args) -> int:
    from .evaluate.report import load_results, write_report

    results = [load_results(path) for path in args.results]
    for path in write_report(results, args.out, stem=args.stem):
        print(f"wrote {path}")
    return 0


# ------------------------------------------------------------------------------------------
# attend, convert
# ------------------------------------------------------------------------------------------
@command
def _attend(sub):
    p = sub.add_parser(
        "attend", help="draw where a model attends on an image",
        description="Draw an image and each of the model's attention maps overlaid on it: AbSViT's "
        "bottom-up, top-down and per-class (--prior) maps, VARS's per-step maps, a ViT's feedforward "
        "map; glimpse models draw their fixations (Python: bioattn.attention.plots.attend).",
    )
    p.add_argument("--model", help="model name (needed without a bioattn checkpoint directory)")
    p.add_argument("--checkpoint", help="bioattn checkpoint directory, .safetensors or released .pth "
                   "(omitted: random weights)")
    p.add_argument("--image", required=True, help="image file (any size: it is resized to the model's input)")
    p.add_argument("--prior", nargs="+", default=[], metavar="CLASS",
                   help="add a top-down map steered by each class (index, or name if the checkpoint lists classes)")
    p.add_argument("--prior-scale", type=float, default=40.0, help="mask scale of class priors (default 40)")
    p.add_argument("--img-size", type=int, default=None, help="build the model for this input size")
    p.add_argument("--num-classes", type=int, default=None, help="classes of a bare checkpoint's model")
    p.add_argument("--steps", type=int, default=None, help="glimpse models: number of glimpses to draw")
    p.add_argument("--gif", action="store_true", help="glimpse models: also write an animated GIF")
    p.add_argument("--out", required=True, help="figure file (.png, .pdf, .svg, .jpg)")
    p.add_argument("--model-arg", action="append", metavar="KEY=VALUE",
                   help="model constructor argument, e.g. attention=vars_d (repeatable)")
    p.set_defaults(func=_run_attend)


def _run_attend(args) -> int:
    from .attention.plots import attend
    from .checkpoint import load_model, read_meta

    if args.checkpoint is None and args.model is None:
        raise BioattnError("give --model (and --checkpoint for trained weights)")
    if args.checkpoint is None:
        print(f"warning: no --checkpoint: {args.model} has random weights", file=sys.stderr)
    model_args = _key_values(args.model_arg)
    if args.img_size is not None:
        model_args["img_size"] = args.img_size
    model = load_model(args.checkpoint, args.model, num_classes=args.num_classes, **model_args)
    meta = read_meta(args.checkpoint) if args.checkpoint is not None else None
    out = attend(model, args.image, args.out, priors=args.prior, prior_scale=args.prior_scale,
                 meta=meta, img_size=args.img_size, steps=args.steps, gif=args.gif)
    for path in out if isinstance(out, (list, tuple)) else [out]:
        print(f"wrote {path}")
    return 0


def _floats3(text: str) -> list[float]:
    values = [float(v) for v in text.replace(",", " ").split()]
    if len(values) != 3:
        raise argparse.ArgumentTypeError(f"expected 3 numbers (R,G,B), got '{text}'")
    return values


@command
def _convert(sub):
    p = sub.add_parser(
        "convert", help="import a released .pth checkpoint as a bioattn checkpoint",
        description="Read an official checkpoint (.pth with a 'model' entry, or a bare state dict; "
        "loaded with weights_only=True), check every key and shape against the named model, and "
        "write a bioattn checkpoint directory (Python: bioattn.checkpoint.convert_checkpoint).",
    )
    p.add_argument("src", help="released checkpoint (.pth)")
    p.add_argument("dst", help="bioattn checkpoint directory to write")
    p.add_argument("--model", required=True, help="model name, e.g. absvit_tiny_patch16_224")
    p.add_argument("--num-classes", type=int, default=None, help="classes of the checkpoint's head")
    p.add_argument("--img-size", type=int, default=None, help="input size the model was trained at")
    p.add_argument("--mean", type=_floats3, default=None, help="input mean R,G,B (default: the model's config)")
    p.add_argument("--std", type=_floats3, default=None, help="input std R,G,B (default: the model's config)")
    p.add_argument("--model-arg", action="append", metavar="KEY=VALUE",
                   help="model constructor argument, e.g. attention=vars_d for the VARS releases (repeatable)")
    p.set_defaults(func=_run_convert)


def _run_convert(args) -> int:
    from .checkpoint import convert_checkpoint

    model_args = _key_values(args.model_arg)
    if args.num_classes is not None:
        model_args["num_classes"] = args.num_classes
    if args.img_size is not None:
        model_args["img_size"] = args.img_size
    out = convert_checkpoint(args.src, args.dst, args.model, mean=args.mean, std=args.std, **model_args)
    print(f"wrote {out}")
    return 0


# ------------------------------------------------------------------------------------------
# data
# ------------------------------------------------------------------------------------------
@command
def _data(sub):
    p = sub.add_parser(
        "data", help="generate or preview the embedded shapes data set",
        description="The embedded data set: procedurally generated shapes in clutter, cached "
        "under $BIOATTN_CACHE (default ~/.cache/bioattn) (Python: bioattn.data.embedded).",
    )
    actions = p.add_subparsers(dest="data_action", metavar="ACTION", required=True)
    g = actions.add_parser(
        "generate", help="generate a spec into the cache (checks an existing copy)",
        description="Generate every split of an embedded spec into the cache, or check the copy "
        "already there and rebuild it if damaged "
        "(Python: bioattn.data.embedded.ensure_cached(EmbeddedSpec.parse(SPEC))).",
    )
    g.add_argument("--data", default="embedded", metavar="SPEC",
                   help="'embedded', 'embedded:pair' or 'embedded:size=96,train=5000,val=500,"
                   "test=500,seed=3' (default: %(default)s)")
    g.add_argument("--cache", metavar="DIR", help="cache root (default: $BIOATTN_CACHE or ~/.cache/bioattn)")
    g.add_argument("--workers", type=int, default=None, help="processes (default: one per CPU)")
    g.add_argument("--force", action="store_true", help="generate again even if a valid copy exists")
    g.set_defaults(func=_run_data_generate)
    v = actions.add_parser(
        "preview", help="write a PNG grid of images with their object outlines",
        description="Draw the first N images of a split with the objects' masks outlined and "
        "their classes as titles (Python: bioattn.data.embedded.preview).",
    )
    v.add_argument("--data", default="embedded", metavar="SPEC", help="embedded spec (default: %(default)s)")
    v.add_argument("--out", required=True, help="PNG file to write")
    v.add_argument("--n", type=int, default=16, help="number of images (default: %(default)s)")
    v.add_argument("--split", default="val", choices=["train", "val", "test"], help="(default: %(default)s)")
    v.set_defaults(func=_run_data_preview)


def _run_data_generate(args) -> int:
    import time

    from .data.embedded import EmbeddedSpec, cache_path, ensure_cached

    spec = EmbeddedSpec.parse(args.data)
    existed = cache_path(spec, args.cache).exists() and not args.force
    start = time.perf_counter()
    folder = ensure_cached(spec, cache_dir=args.cache, workers=args.workers, force=args.force)
    seconds = time.perf_counter() - start
    images = spec.n_train + spec.n_val + spec.n_test
    what = "found in the cache and checked" if existed else "generated"
    print(f"{spec}: {images} images {what} in {seconds:.1f} s")
    print(f"cache: {folder}")
    return 0


def _run_data_preview(args) -> int:
    from .data.embedded import EmbeddedSpec, preview

    out = preview(EmbeddedSpec.parse(args.data), args.out, n=args.n, split=args.split)
    print(f"wrote {out}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="bioattn",
        description="Brain-inspired visual attention (AbSViT, VARS, RS-RNN): train, evaluate "
        "robustness, and look at where models attend.",
    )
    parser.add_argument("--version", action="store_true", help="print the version and exit")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for add in COMMANDS:
        add(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.version:
        from . import __version__

        print(__version__)
        return 0
    if getattr(args, "func", None) is None:
        parser.print_help()
        return 0
    try:
        return int(args.func(args) or 0)
    except BioattnError as exc:
        print(f"error: {_one_line(exc)}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("error: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
