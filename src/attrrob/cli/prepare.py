"""`attrrob prepare --dataset D --raw DIR --out data/prepared/D.npz [--config FILE] [--set key=value ...]`."""

from __future__ import annotations

import argparse

from ..errors import one_line_errors


def build_parser() -> argparse.ArgumentParser:
    from ..registry import dataset_names

    parser = argparse.ArgumentParser(
        prog="attrrob prepare",
        description="Turn verified raw files into one compressed .npz (uint8 NCHW images, int64 labels) and a "
                    "JSON manifest beside it (hashes, counts, scale, differences from the paper's data).")
    parser.add_argument("--dataset", required=True, choices=dataset_names())
    parser.add_argument("--raw", required=True, help="raw directory filled by `attrrob download`")
    parser.add_argument("--out", required=True, help="output .npz, e.g. data/prepared/mnist.npz")
    parser.add_argument("--config", default=None, help="YAML config; its hyperparameters.<dataset>.prepare is used")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                        help="override one prepare setting (repeatable)")
    return parser


@one_line_errors
def main(argv: list[str] | None = None) -> None:
    from ..config import parse_overrides, prepare_settings
    from ..data import prepare

    args = build_parser().parse_args(argv)
    settings = prepare_settings(args.dataset, args.config, parse_overrides(args.overrides))
    manifest = prepare(args.dataset, args.raw, args.out, settings=settings)
    counts = manifest["counts"]
    print(f"{args.out}: {counts['train']} train / {counts['test']} test images, "
          f"sha256 {manifest['npz_sha256']}")


if __name__ == "__main__":
    main()
