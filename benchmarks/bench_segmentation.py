"""Cost of AbSViT's top-down pass in a UperNet segmenter, relative to the same segmenter on ViT.

Measures, in one run on the same machine, images/s of an eval forward (per-pixel logits) and of
a training step (both heads, pixel-wise cross-entropy, backward, AdamW step) for
``upernet_vit_*`` and ``upernet_absvit_*`` at two sizes: the micro models at 64x64 (heads of
128/64 channels) and Tiny/16 at 512x512 (the paper's input size and head: 512/256 channels).
After a warm-up step the two models alternate for ``--repeats`` rounds and the median time of
each is kept. The FLOP ratio of an eval forward (counted by torch, independent of machine load)
is printed beside the timed one.

Target: the AbSViT segmenter at most 2.3x the ViT segmenter's time (eval and training).

    python benchmarks/bench_segmentation.py                    # about 3 minutes on 2 CPU cores
    python benchmarks/bench_segmentation.py --device cuda --amp bf16 --repeats 20
    python benchmarks/bench_segmentation.py --sizes micro      # the micro size only
"""

from __future__ import annotations

import argparse
import sys

import torch
from timm.layers import use_fused_attn

import bioattn  # noqa: F401  (registers the models)
from bioattn.models import create_model
from bioattn.protocol import compute_loss
from timing import ModelRunner, add_device_options, count_flops, parse_amp, parse_device, print_header, time_rounds

LIMIT = 2.3
MODES = ("eval", "train")

# label, ViT segmenter, AbSViT segmenter, batch {device: batch}, rounds {device: rounds}
SIZES = {
    "micro": ("micro/8 @64", "upernet_vit_micro_patch8_64", "upernet_absvit_micro_patch8_64",
              {"cpu": 16, "cuda": 64}, {"cpu": 5, "cuda": 20}),
    "tiny512": ("tiny/16 @512", "upernet_vit_tiny_patch16_224", "upernet_absvit_tiny_patch16_224",
                {"cpu": 2, "cuda": 8}, {"cpu": 2, "cuda": 10}),
}


class Runner(ModelRunner):
    """One segmenter with its batch, targets, loss and optimiser: ``step(mode)`` runs one eval
    forward or one training step."""

    def __init__(self, name: str, batch: int, device: torch.device, amp: torch.dtype | None):
        super().__init__(device, amp)
        torch.manual_seed(0)
        self.model = create_model(name).to(device)
        h, w = self.model.img_size
        g = torch.Generator().manual_seed(0)
        self.x = torch.randn(batch, 3, h, w, generator=g).to(device)
        self.y = torch.randint(0, self.model.num_classes, (batch, h, w), generator=g).to(device)
        self.criterion = torch.nn.CrossEntropyLoss(ignore_index=255)
        self.optimiser = torch.optim.AdamW(self.model.parameters(), lr=1e-4)

    def loss(self) -> torch.Tensor:
        return compute_loss(self.model, self.model.forward_readouts(self.x), self.y, self.criterion)

    def eval_flops(self) -> int:
        """FLOPs of one eval forward."""
        self.model.eval()
        with torch.no_grad():
            return count_flops(self.model, self.x)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_device_options(parser, amps=("none", "bf16"), amp_help="autocast to bfloat16")
    parser.add_argument("--sizes", default="micro,tiny512", help="comma-separated: micro, tiny512")
    parser.add_argument("--batch", type=int, default=None, help="batch for every size (default: per size and device)")
    parser.add_argument("--repeats", type=int, default=None, help="timed rounds (default: per size and device)")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's)")
    args = parser.parse_args(argv)
    sizes = [s.strip() for s in args.sizes.split(",") if s.strip()]
    unknown = [s for s in sizes if s not in SIZES]
    if unknown or not sizes:
        parser.error(f"--sizes takes {', '.join(SIZES)}; got {args.sizes!r}")
    if args.batch is not None and args.batch < 2:
        parser.error("--batch must be at least 2 (the heads' BatchNorm needs 2 images in training)")
    if args.repeats is not None and args.repeats < 1:
        parser.error("--repeats must be at least 1")
    device = parse_device(parser, args.device)
    if args.threads:
        torch.set_num_threads(args.threads)
    amp = parse_amp(args.amp)

    where = torch.cuda.get_device_name(device) if device.type == "cuda" else f"{torch.get_num_threads()} CPU threads"
    print(f"torch {torch.__version__}, {where}, amp {args.amp}, fused attention: {use_fused_attn()}")
    print_header(f"{'size':<14}{'batch':>6}  {'mode':<6}{'ViT img/s':>10}{'AbSViT img/s':>14}"
                 f"{'ratio':>7}{'FLOPs':>7}{'limit':>7}  ok")
    all_ok = True
    for key in sizes:
        label, vit_name, absvit_name, batches, rounds = SIZES[key]
        batch = args.batch or batches[device.type]
        runners = {"vit": Runner(vit_name, batch, device, amp), "absvit": Runner(absvit_name, batch, device, amp)}
        flop_ratio = runners["absvit"].eval_flops() / runners["vit"].eval_flops()
        for mode in MODES:
            seconds = time_rounds(runners, mode, args.repeats or rounds[device.type])
            ratio = seconds["absvit"] / seconds["vit"]
            ok = ratio <= LIMIT
            all_ok &= ok
            print(f"{label:<14}{batch:>6}  {mode:<6}{batch / seconds['vit']:>10.2f}"
                  f"{batch / seconds['absvit']:>14.2f}{ratio:>7.2f}{flop_ratio:>7.2f}{LIMIT:>7.1f}"
                  f"  {'yes' if ok else 'NO'}")
        del runners
    print("ratio: AbSViT / ViT segmenter time per batch (median of alternating rounds); "
          "FLOPs: AbSViT / ViT counted FLOPs of an eval forward")
    return 0 if all_ok else 1


if __name__ == "__main__":
    sys.exit(main())
