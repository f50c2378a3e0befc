"""`python -m segdcn.paper`: the paper's Tables 1, 3 and 4 from dcn_iccv2017.yaml as Markdown, for the docs."""

from __future__ import annotations

from segdcn.paper import load_paper


def markdown() -> str:
    paper = load_paper()
    lines = [f"{paper.citation}, arXiv:{paper.arxiv}; {paper.metric}.", ""]
    for name in ("table1", "table3"):
        table = paper.table(name)
        lines += [f"**{table.title}**", "", "| row | VOC 2012 val | Cityscapes val |", "|---|---:|---:|"]
        lines += [f"| {r.label} | {r.miou['voc_aug']:.1f} | {r.miou['cityscapes']:.1f} |" for r in table.rows]
        lines.append("")
    t4 = paper.table4
    voc, cs = t4["forward_s"]["voc_aug"], t4["forward_s"]["cityscapes"]
    lines += [
        f"**{t4['title']}**",
        "",
        "| model | parameters | forward VOC (s) | forward Cityscapes (s) |",
        "|---|---:|---:|---:|",
        f"| DeepLab | {t4['params_m']['plain']}M | {voc['plain']:.3f} | {cs['plain']:.3f} |",
        f"| + 3 deformable | {t4['params_m']['deformable']}M | {voc['deformable']:.3f} | {cs['deformable']:.3f} |",
        "",
        f"Source: {paper.source}",
    ]
    return "\n".join(lines)


if __name__ == "__main__":
    print(markdown())
