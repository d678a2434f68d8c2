"""A dataset report before training on it. Markdown with plots, for any dataset in the competition layout.

    python -m src.tools.explore --data-dir data            # writes report/report.md and PNGs (under --out-dir)

Covers clips per label split by manually_verified, clip lengths per label and for train vs test, the
sample rates / channels / sample formats found, silent and clipped clips, duplicates by content
hash (the decoded samples, so a re-encoded copy is found too) and the unusually long test clips.
"""
from __future__ import annotations

import hashlib
import sys
from pathlib import Path

import numpy as np
import pandas as pd
from joblib import Parallel, delayed
from tqdm import tqdm

from ..base import cli
from ..base.files import atomic_path, atomic_write, atomic_write_csv
from ..base.layout import audio_dir
from ..base.pcm import INT16_SCALE
from ..dataset.tables import class_names, load_test, load_train

SILENT_DBFS = -60.0     # a clip whose loudest 50 ms window is quieter than this is called silent
CLIPPED_SHARE = 0.001   # a clip with more than this share of samples at full scale is called clipped


def clip_facts(path: Path) -> dict:
    """Format, length, loudness, clipping and a content hash of one file (None values if unreadable)."""
    import soundfile

    try:
        info = soundfile.info(str(path))
        samples, rate = soundfile.read(str(path), dtype="float32", always_2d=True)
    except Exception as error:  # noqa: BLE001 - reported as unreadable
        return {"readable": False, "error": str(error).splitlines()[0] if str(error) else type(error).__name__}
    mono = samples.mean(axis=1)
    window = max(1, int(0.05 * rate))
    usable = len(mono) // window * window
    frames = mono[:usable].reshape(-1, window) if usable else mono[None, :]
    loudest = float(np.sqrt((frames ** 2).mean(axis=1)).max()) if mono.size else 0.0
    quantised = np.round(mono * INT16_SCALE).astype(np.int16)
    return {"readable": True, "error": "", "samplerate": info.samplerate, "channels": info.channels,
            "subtype": info.subtype, "seconds": len(mono) / rate,
            "loudest_dbfs": 20 * np.log10(max(loudest, 1e-10)),
            "clipped_share": float((np.abs(samples) >= 0.999).mean()) if samples.size else 0.0,
            "content_hash": hashlib.sha1(quantised.tobytes()).hexdigest() if mono.size else ""}


def gather(data_dir: Path, n_jobs: int = -1) -> pd.DataFrame:
    """One row of facts per train and test clip."""
    data_dir = Path(data_dir)
    train = load_train(data_dir).assign(split="train")
    test = load_test(data_dir, class_names(train)).assign(split="test", label="", manually_verified=-1)
    table = pd.concat([train, test], ignore_index=True)
    paths = [audio_dir(data_dir, s) / f for s, f in zip(table.split, table.fname)]
    jobs = (delayed(clip_facts)(p) for p in paths)
    facts = list(tqdm(Parallel(n_jobs=n_jobs, return_as="generator", batch_size=16)(jobs), total=len(paths),
                      unit="clip", desc="reading clips", disable=None))
    return pd.concat([table.reset_index(drop=True), pd.DataFrame(facts)], axis=1)


def write_report(table: pd.DataFrame, out: Path, title: str) -> Path:
    """report.md and its PNGs in `out`."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    out.mkdir(parents=True, exist_ok=True)
    train, test = table[table.split == "train"], table[table.split == "test"]
    ok = table[table.readable]
    lines = [f"# {title}", "", f"{len(train)} train clips in {train.label.nunique()} labels, {len(test)} test clips; "
             f"{(~table.readable).sum()} unreadable.", ""]

    counts = train.groupby(["label", "manually_verified"]).size().unstack(fill_value=0)
    counts = counts.reindex(columns=[1, 0], fill_value=0).rename(columns={1: "verified", 0: "unverified"})
    counts = counts.loc[counts.sum(axis=1).sort_values().index]
    fig, ax = plt.subplots(figsize=(8, max(4, 0.22 * len(counts))))
    ax.barh(counts.index, counts.verified, label="verified", color="tab:blue")
    ax.barh(counts.index, counts.unverified, left=counts.verified, label="unverified", color="tab:orange")
    ax.set_xlabel("train clips")
    ax.tick_params(axis="y", labelsize=7)
    ax.legend(loc="lower right")
    _save(fig, out / "clips_per_label.png")
    lines += ["## Clips per label", "", "![clips per label](clips_per_label.png)", "",
              "| label | verified | unverified |", "|---|---:|---:|"]
    lines += [f"| {label} | {row.verified} | {row.unverified} |" for label, row in counts[::-1].iterrows()]

    fig, ax = plt.subplots(figsize=(8, 4))
    bins = np.linspace(0, max(1.0, ok.seconds.max()), 40)
    for split, part in ok.groupby("split"):
        ax.hist(part.seconds, bins=bins, alpha=0.6, density=True, label=f"{split} ({len(part)})")
    ax.set_xlabel("clip length (s)")
    ax.legend()
    _save(fig, out / "lengths_train_test.png")
    by_label = ok[ok.split == "train"].groupby("label").seconds
    order = by_label.median().sort_values().index
    fig, ax = plt.subplots(figsize=(8, max(4, 0.22 * len(order))))
    ax.boxplot([by_label.get_group(label) for label in order], orientation="horizontal", tick_labels=list(order))
    ax.set_xlabel("clip length (s)")
    ax.tick_params(axis="y", labelsize=7)
    _save(fig, out / "lengths_per_label.png")
    lines += ["", "## Clip lengths", "", "![train vs test](lengths_train_test.png)", "",
              "![per label](lengths_per_label.png)", "",
              "| split | clips | min s | median s | max s | total h |", "|---|---:|---:|---:|---:|---:|"]
    for split, part in ok.groupby("split"):
        lines.append(f"| {split} | {len(part)} | {part.seconds.min():.2f} | {part.seconds.median():.2f} | "
                     f"{part.seconds.max():.2f} | {part.seconds.sum() / 3600:.2f} |")

    lines += ["", "## Formats", "", "| sample rate | channels | format | clips |", "|---:|---:|---|---:|"]
    for (rate, channels, subtype), n in ok.groupby(["samplerate", "channels", "subtype"]).size().items():
        lines.append(f"| {int(rate)} | {int(channels)} | {subtype} | {n} |")

    lines += ["", "## Clips to look at", ""]
    silent = ok[ok.loudest_dbfs < SILENT_DBFS]
    clipped = ok[ok.clipped_share > CLIPPED_SHARE]
    groups = ok[ok.content_hash != ""].groupby("content_hash").fname
    duplicates = [sorted(g) for _, g in groups if len(g) > 1]
    limit = np.percentile(ok[ok.split == "train"].seconds, 99) if len(ok[ok.split == "train"]) else np.inf
    long_test = ok[(ok.split == "test") & (ok.seconds > limit)].sort_values("seconds", ascending=False)
    lines += [_listing(f"Silent (loudest 50 ms below {SILENT_DBFS:.0f} dBFS)", silent,
                       lambda r: f"{r.split}/{r.fname} ({r.loudest_dbfs:.0f} dBFS)"),
              _listing(f"Clipped (over {CLIPPED_SHARE:.1%} of samples at full scale)", clipped,
                       lambda r: f"{r.split}/{r.fname} ({r.clipped_share:.1%})"),
              f"**Duplicates by content** ({len(duplicates)} groups): "
              + ("; ".join(" = ".join(group) for group in duplicates[:50]) or "none"), "",
              _listing(f"Test clips longer than the train 99th percentile ({limit:.1f} s)", long_test,
                       lambda r: f"{r.fname} ({r.seconds:.1f} s)"),
              _listing("Unreadable", table[~table.readable], lambda r: f"{r.split}/{r.fname} ({r.error})")]
    path = out / "report.md"
    atomic_write(path, "\n".join(lines) + "\n")
    atomic_write_csv(table, out / "clips.csv")
    return path


def _listing(title: str, rows: pd.DataFrame, describe, limit: int = 50) -> str:
    shown = ", ".join(describe(r) for r in rows.head(limit).itertuples())
    more = f" and {len(rows) - limit} more (see clips.csv)" if len(rows) > limit else ""
    return f"**{title}** ({len(rows)}): {shown or 'none'}{more}\n"


def _save(fig, path: Path) -> None:
    import matplotlib.pyplot as plt

    fig.tight_layout()
    with atomic_path(path, suffix=".png") as tmp:
        fig.savefig(tmp, dpi=110)
    plt.close(fig)


@cli.command
def main(argv=None) -> int:
    parser = cli.parser("python -m src.tools.explore", __doc__)
    parser.add_argument("--out", type=Path, help="report folder (default: OUT_DIR/report)")
    parser.add_argument("--jobs", type=int, default=-1, help="processes (default: all cores)")
    args = parser.parse_args(argv)
    table = gather(args.data_dir, args.jobs)
    path = write_report(table, args.out or cli.paths(args).report_dir, f"Dataset report: {args.data_dir}")
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
