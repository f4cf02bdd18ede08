from __future__ import annotations

import json

from frozenbench.pretrain.report import probe_rows, render_markdown


def test_margins_are_taken_against_the_random_backbone_of_the_same_arch(tmp_path):
    def probe(name, arch, objective, knn, lin):
        path = tmp_path / f"{name}.json"
        path.write_text(
            json.dumps(
                {"arch": arch, "objective": objective, "steps": 10, "knn_top1": knn, "linear_top1": lin, "chance": 0.1}
            )
        )
        return name, path

    files = dict(
        [
            probe("t_rand", "tiny", "random", 0.2, 0.25),
            probe("t_sup", "tiny", "supervised", 0.8, 0.9),
            probe("t_mim", "tiny", "mim", 0.25, 0.2),
            probe("s_sup", "small", "supervised", 0.9, 0.9),
        ]
    )
    rows = {r["backbone"]: r for r in probe_rows(files)}
    assert abs(rows["t_sup"]["knn_margin_over_random"] - 0.6) < 1e-9 and rows["t_sup"]["beats_random"]
    assert rows["t_mim"]["beats_random"] is False  # linear probe below random
    assert "beats_random" not in rows["s_sup"] and "beats_random" not in rows["t_rand"]
    table = render_markdown(list(rows.values()))
    assert "| t_sup | supervised | 10 | 80.0 | 90.0 | 10.0 | +60.0 | +65.0 |" in table
    assert "| s_sup | supervised | 10 | 90.0 | 90.0 | 10.0 | – | – |" in table
