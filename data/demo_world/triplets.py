"""FEC-style expression triplets labelled by AU distance, and the raw FEC CSV writer."""
import numpy as np

TYPES = ["ONE_CLASS_TRIPLET", "TWO_CLASS_TRIPLET", "THREE_CLASS_TRIPLET"]
MARGIN_ABS, MARGIN_REL = 0.1, 0.75  # keep iff d2 - d1 >= MARGIN_ABS and d1 <= MARGIN_REL * d2
URL_FMT = "https://demo.invalid/fec/{}.jpg"


def odd_one_out(au3: np.ndarray):
    """au3 (3, 14) -> (index of the odd one out, d_closest, d_second) by Euclidean AU distance."""
    pairs = [(0, 1), (0, 2), (1, 2)]
    d = np.array([np.linalg.norm(au3[i] - au3[j]) for i, j in pairs])
    order = np.argsort(d, kind="stable")
    i, j = pairs[order[0]]
    return 3 - i - j, float(d[order[0]]), float(d[order[1]])


def sample_triplets(rng, cls, au, is_avatar, n, n_classes, avatar_share=0.25):
    """Sample n unambiguous triplets from an image pool.

    Args: cls (N,) class ids, au (N, 14), is_avatar (N,) bool, n triplets.
    Returns a list of (anchor, positive, negative, type) pool indices; types cycle evenly.
    """
    groups = {}
    for src in (False, True):
        for c in range(n_classes):
            groups[src, c] = np.flatnonzero((is_avatar == src) & (cls == c))
    out = []
    for t in range(n):
        ttype = t % 3
        mixed = rng.random() < avatar_share and any(len(groups[True, c]) for c in range(n_classes))
        for _ in range(1000):
            c = rng.choice(n_classes, size=3, replace=False)
            cs = [c[0]] * 3 if ttype == 0 else ([c[0], c[0], c[1]] if ttype == 1 else list(c))
            src = [False] * 3
            if mixed:
                for k in rng.choice(3, size=int(rng.integers(1, 3)), replace=False):
                    src[k] = True
            g = [groups[s, k] for s, k in zip(src, cs)]
            if any(len(x) == 0 for x in g):
                continue
            idx = [int(x[rng.integers(len(x))]) for x in g]
            if len(set(idx)) < 3:
                continue
            odd, d1, d2 = odd_one_out(au[idx])
            if d2 - d1 >= MARGIN_ABS and d1 <= MARGIN_REL * d2:
                a, p = [idx[k] for k in range(3) if k != odd]
                if rng.random() < 0.5:
                    a, p = p, a
                out.append((a, p, idx[odd], TYPES[ttype]))
                break
        else:
            raise RuntimeError("could not sample an unambiguous triplet; pool too small")
    return out


def _fmt_bbox(b):
    return [f"{float(x):.4f}" for x in b]


def raw_rows(rng, triplets, paths, bboxes, url_of):
    """Raw FEC rows (28 fields each) with shuffled image order and 6 annotators.

    Most rows are unanimous; some have 1 or 2 dissenting annotators (the majority is always the
    AU-distance answer; no ties). Returns (rows, stats).
    """
    rows, n_dis = [], {0: 0, 1: 0, 2: 0}
    for a, p, ng, ttype in triplets:
        order = rng.permutation(3)  # position k shows image [a, p, ng][order[k]]
        imgs = [(a, p, ng)[o] for o in order]
        answer = int(np.flatnonzero(order == 2)[0]) + 1
        row = []
        for i in imgs:
            row += [url_of[paths[i]]] + _fmt_bbox(bboxes[i])
        row.append(ttype)
        u = rng.random()
        k_dis = 0 if u < 0.7 else (1 if u < 0.92 else 2)
        n_dis[k_dis] += 1
        answers = [answer] * 6
        for j in rng.choice(6, size=k_dis, replace=False):
            answers[j] = int(rng.choice([x for x in (1, 2, 3) if x != answer]))
        for ann, ans in zip(rng.choice(900, size=6, replace=False) + 100, answers):
            row += [str(int(ann)), str(ans)]
        rows.append(row)
    return rows, {"unanimous": n_dis[0], "one_dissent": n_dis[1], "two_dissent": n_dis[2], "ties": 0}


def inject_errors(rows, missing_url):
    """Insert 3 malformed rows and 1 row with a missing local file; returns (rows, report)."""
    rows = [list(r) for r in rows]
    base = rows[0]
    short = base[:27]  # 27 columns
    bad_bbox = list(base)
    bad_bbox[1] = "not_a_number"
    bad_answer = list(base)
    bad_answer[17] = "7"  # answer outside 1..3
    missing = list(base)
    missing[0] = missing_url
    inserts = [(3, short, "27 columns instead of 28"), (8, bad_bbox, "non-numeric bbox value"),
               (13, bad_answer, "annotator answer 7 outside 1..3"),
               (18, missing, "URL maps to a file that does not exist")]
    report = {}
    for pos, row, why in inserts:
        pos = min(pos, len(rows))
        rows.insert(pos, row)
        report[str(pos)] = why
    return rows, report
