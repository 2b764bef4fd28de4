"""Tiny data sets written in each benchmark's official on-disk layout, for the streaming tests.

Each class gets its own colour (so a network can learn something in a few steps) plus noise, as real JPEGs."""
import lzma
import pickle
from pathlib import Path

import torch
from torchvision.io import write_jpeg

# iNaturalist 2021: 8 species, a full 7-rank path each (two genera share a name in different families).
INAT_SPECIES = [
    ("Animalia", "Chordata", "Aves", "Passeriformes", "Corvidae", "Corvus", "corax"),
    ("Animalia", "Chordata", "Aves", "Passeriformes", "Corvidae", "Corvus", "corone"),
    ("Animalia", "Chordata", "Aves", "Passeriformes", "Paridae", "Parus", "major"),
    ("Animalia", "Chordata", "Mammalia", "Carnivora", "Felidae", "Felis", "catus"),
    ("Animalia", "Arthropoda", "Insecta", "Lepidoptera", "Nymphalidae", "Vanessa", "atalanta"),
    ("Plantae", "Tracheophyta", "Magnoliopsida", "Rosales", "Rosaceae", "Rosa", "canina"),
    ("Plantae", "Tracheophyta", "Magnoliopsida", "Fagales", "Fagaceae", "Quercus", "robur"),
    ("Plantae", "Tracheophyta", "Liliopsida", "Asparagales", "Orchidaceae", "Quercus", "fakeorchid"),
]


def image(label: int, seed: int, size=(30, 40)) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    colour = torch.tensor([(label * 97) % 256, (label * 57 + 80) % 256, (label * 151 + 30) % 256]).view(3, 1, 1)
    noise = torch.randint(-20, 21, (3, *size), generator=g)
    return (colour + noise).clamp(0, 255).to(torch.uint8)


def jpeg(path: Path, label: int, seed: int, size=(30, 40)) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    write_jpeg(image(label, seed, size), str(path), quality=90)


def inat21(root: Path, train: int = 6, test: int = 2) -> Path:
    for split, n in (("2021_train_mini", train), ("2021_valid", test)):
        for c, path in enumerate(INAT_SPECIES):
            folder = root / split / "_".join([f"{c:05d}", *path])
            for i in range(n):
                jpeg(folder / f"{split}-{c}-{i}.jpg", c, hash((split, c, i)) % 2**31)
    return root


# FGVC-Aircraft: variant -> family -> manufacturer.
AIRCRAFT = [("707-320", "Boeing 707", "Boeing"), ("727-200", "Boeing 727", "Boeing"),
            ("737-200", "Boeing 737", "Boeing"), ("737-300", "Boeing 737", "Boeing"),
            ("A319", "A320", "Airbus"), ("A320", "A320", "Airbus"), ("A330-200", "A330", "Airbus"),
            ("DC-3", "DC-3", "Douglas Aircraft Company")]


def aircraft(root: Path, train: int = 6, test: int = 2) -> Path:
    data = root / "fgvc-aircraft-2013b" / "data"
    data.mkdir(parents=True)
    columns = {"variant": 0, "family": 1, "manufacturer": 2}
    files = {"variant": "variants.txt", "family": "families.txt", "manufacturer": "manufacturers.txt"}
    for level, column in columns.items():
        names = list(dict.fromkeys(row[column] for row in AIRCRAFT))
        (data / files[level]).write_text("".join(f"{n}\n" for n in names))
    number = 1000000
    for split, n in (("trainval", train), ("test", test)):
        lines = {level: [] for level in columns}
        for v, row in enumerate(AIRCRAFT):
            for i in range(n):
                number += 1
                jpeg(data / "images" / f"{number}.jpg", v, number)
                for level, column in columns.items():
                    lines[level].append(f"{number} {row[column]}\n")
        for level in columns:
            (data / f"images_{level}_{split}.txt").write_text("".join(lines[level]))
    return root


# An MBM-style isa tree over WordNet-like ids, leaves at depths 2, 3 and 4 (unbalanced, as tieredImageNet-H's).
ISA = [("n0", "n1"), ("n0", "n2"), ("n1", "n11"), ("n1", "n12"), ("n11", "n111"), ("n11", "n112"),
       ("n111", "c1"), ("n111", "c2"), ("n112", "c3"), ("n12", "c4"), ("n12", "c5"), ("n2", "c6"), ("n2", "n21"),
       ("n21", "c7"), ("n21", "c8")]


def mbm_reference_distances(isa) -> dict:
    """MBM's ilsvrc distance, re-typed from its definition: the height of the LCA once every leaf is brought down
    to the deepest leaf's depth H, i.e. H - depth(LCA) (checked against all pairs of MBM's tieredImageNet-H file,
    fiveai/making-better-mistakes@f0bb7d0a7c4a9c7c9517045a4be4446e9baf824f)."""
    parent = {c: p for p, c in isa}
    nodes = set(parent) | set(parent.values())

    def path(n):
        out = [n]
        while out[-1] in parent:
            out.append(parent[out[-1]])
        return out[::-1]

    leaves = sorted(n for n in nodes if n not in set(parent.values()))
    height = max(len(path(n)) - 1 for n in leaves)
    out = {}
    for a in sorted(nodes):
        for b in sorted(nodes):
            if a <= b:
                pa, pb = path(a), path(b)
                common = sum(1 for x, y in zip(pa, pb) if x == y)
                out[(a, b)] = 0 if a == b else height - (common - 1)
    return out


def mbm(hierarchy_dir: Path, images: Path, prefix: str = "tiered_imagenet", train: int = 6, test: int = 2,
        distances: bool = True) -> tuple[Path, Path]:
    hierarchy_dir.mkdir(parents=True)
    (hierarchy_dir / f"{prefix}_isa.txt").write_text("".join(f"{p} {c}\n" for p, c in ISA))
    leaves = sorted({c for _, c in ISA} - {p for p, _ in ISA})
    lines = ["."]
    for split, n in (("train", train), ("val", 1), ("test", test)):
        lines.append(f"./{split}")
        for c, leaf in enumerate(leaves):
            lines.append(f"./{split}/{leaf}")
            for i in range(n):
                name = f"{leaf}{split}{i:08d}.jpg"
                jpeg(images / split / leaf / name, c, hash((split, c, i)) % 2**31)
                lines.append(f"./{split}/{leaf}/{name}")
    with lzma.open(hierarchy_dir / f"{prefix}_splits.txt.xz", "wt") as f:
        f.write("\n".join(lines) + "\n")
    if distances:
        with lzma.open(hierarchy_dir / f"{prefix}_ilsvrc_distances.pkl.xz", "wb") as f:
            pickle.dump(mbm_reference_distances(ISA), f)
    return hierarchy_dir, images
