"""Convert ../shared/data/dynamic-ofa/xavier_nx_reference_families.json into family files.

Run once by a developer; the results are committed under config/families/. Kept so the conversion is
reproducible and its provenance is visible.
"""

import json
import sys
from pathlib import Path

from dynofa_ros.inference.family import Accuracy, Level, SubnetFamily

SRC = Path(sys.argv[1] if len(sys.argv) > 1 else "../shared/data/dynamic-ofa/xavier_nx_reference_families.json")
OUT = Path("config/families")

raw = json.loads(SRC.read_text())
for key, levels in raw["families"].items():
    fam = SubnetFamily(
        name=f"xavier_nx_{key}",
        supernet=raw["supernet"],
        reference_profile="xavier_nx_gpu",
        provenance=(
            "Dynamic-OFA (Lou et al., CVPRW 2021, arXiv 2105.03596) runtime-demo family "
            f"'{key}' for {raw['platform']}. Accuracy: {raw['metric_accuracy']}. "
            f"Latency xavier_nx_gpu: {raw['metric_latency']} (end-to-end demo figures). "
            "Copied from shared/data/dynamic-ofa/xavier_nx_reference_families.json."
        ),
        levels=[
            Level(tuple(lv["ks"]), tuple(lv["e"]), tuple(lv["d"]), int(lv["r"]),
                  Accuracy(float(lv["top1"]), "measured", "ImageNet-1k val top-1, Dynamic-OFA authors"),
                  {"xavier_nx_gpu": float(lv["latency_ms"])})
            for lv in sorted(levels, key=lambda lv: lv["latency_ms"])
        ],
    )
    print(fam.save(OUT / f"{fam.name}.json"))
