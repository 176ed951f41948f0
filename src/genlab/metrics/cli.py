"""``genlab-fid`` / ``python -m genlab.metrics``: FID, KID, precision/recall (and IS) between two
image sets, printed as one JSON object on stdout; logs and progress go to stderr.

    genlab-fid PATH_A PATH_B [--num N] [--batch-size B] [--device D] [--weights FILE] [--isc]

Each set is a folder of images, an .npz of uint8 images, an archive (``ARCHIVE::FOLDER`` for
one folder inside it) or a dataset split such as ``cifar10:test``. The first set is the
generated one (precision is measured on it, IS of it); the second the reference. Statistics of
dataset splits and archives are cached (see ``--cache-dir``); folders and .npz files are not.
Exit status 1 with a one-paragraph message on stderr for input the user can fix.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import time

import torch

from genlab.errors import ArgumentParser, GenlabError, exit_status

log = logging.getLogger("genlab.metrics")


def build_parser() -> argparse.ArgumentParser:
    p = ArgumentParser(
        prog="genlab-fid",
        description="FID, KID, precision/recall (and IS) between two image sets, as one JSON "
                    "object on stdout.",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="Sets: a folder, FILE.npz, ARCHIVE[.tar|.tar.gz|.zip][::FOLDER] or NAME:SPLIT "
               "(e.g. cifar10:test). See the Metrics section of the README.")
    p.add_argument("path_a", metavar="PATH_A", help="the generated image set")
    p.add_argument("path_b", metavar="PATH_B", help="the reference image set")
    p.add_argument("--num", type=int, default=None,
                   help="use at most N images of each set, drawn at random with --seed "
                        "(default: all)")
    p.add_argument("--seed", type=int, default=0, help="seed of the --num subsets (default 0)")
    p.add_argument("--batch-size", type=int, default=None,
                   help="images per forward pass (default: 16 on a CPU, 200 on a GPU)")
    p.add_argument("--kid-subsets", type=int, default=100)
    p.add_argument("--kid-subset-size", type=int, default=1000,
                   help="shrunk, with a warning, to the smaller set's size")
    p.add_argument("--isc", action="store_true", help="also the Inception Score of PATH_A")
    p.add_argument("--no-pr", action="store_true", help="skip precision/recall")
    p.add_argument("--no-kid", action="store_true", help="skip KID")
    p.add_argument("--pr-k", type=int, default=3, help="neighbourhood size of precision/recall")
    p.add_argument("--device", default=None, help="cpu or cuda (default: cuda if available)")
    p.add_argument("--bf16", action="store_true",
                   help="bfloat16 autocast in the network (faster on GPUs; shifts FID slightly)")
    p.add_argument("--weights", default=None,
                   help="Inception weight file (default: $GENLAB_INCEPTION_WEIGHTS, else the "
                        "torch hub cache, downloaded when missing)")
    p.add_argument("--threads", type=int, default=None, help="CPU threads for torch")
    p.add_argument("--cache-dir", default=None,
                   help="feature cache (default: $GENLAB_CACHE_DIR, else the data folder's cache/)")
    p.add_argument("--no-cache", action="store_true", help="neither read nor write the cache")
    p.add_argument("-q", "--quiet", action="store_true", help="log warnings only")
    return p


def check_same_size(a, b) -> None:
    """The two sets must have one resolution, as the images inside one set must: the network
    resizes every image to 299x299, and FID/KID depend on the resolution the images had, so
    sets of different sizes are not compared silently."""
    if tuple(a.shape[1:]) != tuple(b.shape[1:]):
        (ha, wa), (hb, wb) = a.shape[1:], b.shape[1:]
        raise GenlabError(f"{a.description} holds {wa}x{ha} images and {b.description} "
                          f"{wb}x{hb} ones. FID/KID compare sets of one resolution (the network "
                          "resizes both to 299x299, but the scores still depend on the size the "
                          "images had), so sets of different sizes are not compared: resize one "
                          "set to the other's size yourself.")


def run(args: argparse.Namespace) -> dict:
    from genlab.metrics.inception import FeatureExtractor
    from genlab.metrics.reference import compare, default_device, reference_stats
    from genlab.metrics.sources import cacheable, open_images

    if args.threads:
        torch.set_num_threads(args.threads)
    device = args.device or default_device()
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise GenlabError("--device cuda was asked for, but torch sees no CUDA device.")
    if args.batch_size is not None and args.batch_size < 1:
        raise GenlabError("--batch-size must be positive.")
    start = time.perf_counter()
    extractor = FeatureExtractor(args.weights, device=device, batch_size=args.batch_size,
                                 bf16=args.bf16)
    sources = [open_images(args.path_a), open_images(args.path_b)]
    check_same_size(*sources)
    log.info("Inception on %s, %s, batch %d, %d CPU threads", device, extractor.precision,
             extractor.batch_size, torch.get_num_threads())
    sets = []
    need_features = not (args.no_pr and args.no_kid)
    for spec, source, logits in ((args.path_a, sources[0], args.isc),
                                 (args.path_b, sources[1], False)):
        sets.append(reference_stats(source, n=args.num, seed=args.seed, extractor=extractor,
                                    cache_dir=args.cache_dir,
                                    use_cache=not args.no_cache and cacheable(spec),
                                    keep_features=need_features, keep_logits=logits))
    result = compare(sets[0], sets[1], kid=not args.no_kid, pr=not args.no_pr, isc=args.isc,
                     kid_subsets=args.kid_subsets, kid_subset_size=args.kid_subset_size,
                     pr_k=args.pr_k)
    log.info("Done in %.1f s", time.perf_counter() - start)
    return result


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.WARNING if args.quiet else logging.INFO, stream=sys.stderr,
                        format="%(asctime)s %(levelname)s %(message)s", datefmt="%H:%M:%S")
    return exit_status(lambda: print(json.dumps(run(args))))


if __name__ == "__main__":
    sys.exit(main())
