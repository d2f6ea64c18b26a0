"""Public datasets in one command: download, verify the checksum, install where a config reads
them, and print the command that trains on them.

  python -m sine_jax.data.fetch --list             # every dataset: source, terms, checksum
  python -m sine_jax.data.fetch ml-1m              # -> data/ml-1m/ratings.dat (+ movies.dat)
  python -m sine_jax.data.fetch ml-1m --archive=ml-1m.zip   # offline: a file you downloaded

A download shows a progress bar, resumes a partial file (HTTP Range) when rerun, and is
checked against the file's published SHA-256 before anything is installed; a dataset whose
checksum is not published has its checksum computed and shown. Files are installed under
DEST/NAME (`--dest`, default `data`), replacing an earlier install only once the new one is
complete. A failure is one line and exit code 2.
"""

import dataclasses
import hashlib
import os
import shutil
import sys
import tempfile
import urllib.error
import urllib.request
import zipfile

from absl import flags
from tqdm import tqdm

from sine_jax import cli
from sine_jax.errors import SineError

_BLOCK = 1 << 20
_TIMEOUT_SECONDS = 60

GROUPLENS_TERMS = (
    "GroupLens (University of Minnesota): research use; no redistribution and no commercial "
    "use without permission; cite F. M. Harper and J. A. Konstan, The MovieLens Datasets: "
    "History and Context, ACM TiiS 5(4), 2015 (the README in the archive)"
)
AMAZON_TERMS = (
    "Amazon product data, 2014 (J. McAuley, UCSD): research use; cite R. He and J. McAuley, "
    "WWW 2016, and J. McAuley, C. Targett, Q. Shi and A. van den Hengel, SIGIR 2015"
)


@dataclasses.dataclass(frozen=True)
class Download:
    """One file of a dataset as its source publishes it.

    Attributes:
        url: where it is downloaded from; None when it cannot be downloaded directly (a
            sign-in page: the user downloads it and passes `--archive`).
        filename: its name as published.
        sha256: its published checksum (None: unknown, computed and shown after download).
        size: its size in bytes, when known.
        members: for a zip archive, {member path: installed name}, the files taken out of
            it (every one must be there); None for a file installed as it is.
    """

    url: str | None
    filename: str
    sha256: str | None
    size: int | None = None
    members: dict[str, str] | None = None

    def installed_names(self) -> list[str]:
        return list(self.members.values()) if self.members else [self.filename]


@dataclasses.dataclass(frozen=True)
class Source:
    """A dataset: its files, terms, and the config and data file that train on it."""

    name: str
    title: str
    page: str
    terms: str
    downloads: tuple[Download, ...]
    config: str  # the --config that trains on it
    data_file: str  # the installed file that data.path names
    note: str = ""

    def train_command(self, dest: str) -> str:
        return (f"python -m sine_jax.main --config={self.config} --workdir=runs/{self.name} "
                f"--config.data.path={os.path.join(dest, self.name, self.data_file)}")


def _movielens(name: str, title: str, size: int, sha256: str, files: list[str],
               data_file: str, note: str = "") -> Source:
    return Source(
        name=name, title=title, page=f"https://grouplens.org/datasets/movielens/",
        terms=GROUPLENS_TERMS, config="configs/movielens.py", data_file=data_file, note=note,
        downloads=(Download(
            url=f"https://files.grouplens.org/datasets/movielens/{name}.zip",
            filename=f"{name}.zip", sha256=sha256, size=size,
            members={f"{name}/{f}": f for f in files},
        ),),
    )


# The 2014 ratings-only files (user,item,rating,timestamp) by category, with their SHA-256.
AMAZON_CATEGORIES = {
    "Books": "87d923ddac2aacf40c1d0e0e056dbf4bf69c9c7d41852c6b434e781e759c0707",
    "Electronics": "a8e5b66b7f5371d1659ff88ae4acec91604125d6850f4f7e1c418120f2f9c16c",
    "Movies_and_TV": "05fd3bbb387bca99f16b7a64a26abb736429da416e3cc0cc7423483e9ec4c265",
    "CDs_and_Vinyl": "74b503152bc8f92f389a1f841ec00361f903772e5ebb2b664ce678c023dbbceb",
    "Clothing_Shoes_and_Jewelry":
        "7bf571cb99abaebf380d2a231986e6df7b622ebd49b308e2506f1c0aab54b29a",
    "Home_and_Kitchen": "b0dae06e0b147abbf31878b4d16075a77b6ca8b8a5005b1a0b153b9d3ed310b2",
    "Kindle_Store": "616edbb9ee9b5e1f0212e0a75e226df3abb66548d833df3ea8a3c53942541200",
    "Sports_and_Outdoors": "a31a27e2f0cd85b50acd002378cf1a23a0b3f2659484defb3225a836118252d4",
    "Cell_Phones_and_Accessories":
        "3c944712ec98360c959df256c9e3dde0d40caa4a888b6d2013050a7ab502afaa",
    "Health_and_Personal_Care":
        "387374ea5c9641a6e9dc09b93423414da4f8153b2975594e8b24c4bdd60b0462",
    "Toys_and_Games": "e28a342ca89a79036a9a840c0385a3a3342a08d3d3450ea3eaf3d544cd65d3af",
    "Video_Games": "f0ca171050c2e0f208d47f5267992476b21ab68a01439c21c8be1a4432982cfa",
    "Tools_and_Home_Improvement":
        "ea650a9d79e69a78f011843104ecac2a3ed8059bf7405e5a19f3a25511c9d2c6",
    "Beauty": "17d5232b90444beecfe758ce1446e5300230491f3a88ac802992ca95fc4c150f",
    "Apps_for_Android": "ed8919d499a20949a60ea10c40c25d820783da7bead896f32213f98b1887d987",
    "Office_Products": "4cd5f3d454e744b7017ad5918e995ec2893b577c2109dbaa6d65b375092f9630",
    "Pet_Supplies": "5f963b813439471b4b2ce10fa7e9293da5995e4ec61f29d54489996a857b3442",
    "Automotive": "d77d59c094d86b7c987edcbc8d99ae78c9061e6f89ba819e1a77a1951fe977cc",
    "Grocery_and_Gourmet_Food":
        "ae9b32803a9f0ddf98222e00871e7a8ff7709e792f2ba8048131ca214617e33c",
    "Patio_Lawn_and_Garden": "8edc47c5fe860e97e34ab1f339835606e551b03bec13bc4f967693c1b04ad3c0",
    "Baby": "a219f779b2694f660f1ee243f2af71d63c2c9828425e716569faace305e978d1",
    "Digital_Music": "fdf164882460ff26fa2521e01f6a9cf8005ad252ddce308dd03519064f02d80e",
    "Musical_Instruments": "c541cf84fcc75d98cc595ebd856b0ebd351efce134671171c2de0d54b9573b9c",
    "Amazon_Instant_Video": "249e1061d30db8c1230e4f3edd0523be12c37e6a8e6b9872a312cf6c326f157b",
}
_S3REC = ("https://raw.githubusercontent.com/RUCAIBox/CIKM2020-S3Rec/"
          "2a81540ae18615d88ef88227b0c066e5b74781e5/data/")


def amazon(category: str = "Books") -> Source:
    """The ratings-only CSV of one category of the 2014 Amazon product data."""
    filename = f"ratings_{category}.csv"
    return Source(
        name="amazon", title=f"Amazon {category.replace('_', ' ')} ratings, 2014 "
        f"(ratings-only CSV; the paper's Amazon is Books: 22.5M ratings)",
        page="https://jmcauley.ucsd.edu/data/amazon/", terms=AMAZON_TERMS,
        config="configs/amazon.py", data_file=filename,
        note=f"--category picks another category: {', '.join(AMAZON_CATEGORIES)}",
        downloads=(Download(
            url=f"https://snap.stanford.edu/data/amazon/productGraph/categoryFiles/{filename}",
            filename=filename, sha256=AMAZON_CATEGORIES[category]),),
    )


SOURCES = {
    source.name: source for source in (
        _movielens("ml-100k", "MovieLens 100K: 100,000 ratings, 943 users, 1,682 movies",
                   4924029, "50d2a982c66986937beb9ffb3aa76efe955bf3d5c6b761f4e3a7cd717c6a3229",
                   ["u.data", "u.item", "u.genre", "u.user", "u.occupation", "u.info",
                    "README"], "u.data"),
        _movielens("ml-1m", "MovieLens 1M: 1,000,209 ratings, 6,040 users, 3,706 movies",
                   5917549, "a6898adb50b9ca05aa231689da44c217cb524e7ebd39d264c56e2832f2c54e20",
                   ["ratings.dat", "movies.dat", "users.dat", "README"], "ratings.dat"),
        _movielens("ml-latest-small", "MovieLens latest-small: about 100,000 ratings, 610 "
                   "users, 9,742 movies", 978202,
                   "696d65a3dfceac7c45750ad32df2c259311949efec81f0f144fdfb91ebc9e436",
                   ["ratings.csv", "movies.csv", "links.csv", "tags.csv", "README.txt"],
                   "ratings.csv", note="GroupLens updates 'latest' releases; the checksum is "
                   "the September 2018 release's"),
        amazon(),
        Source(
            name="amazon-toys", title="Amazon Toys and Games, the S3-Rec benchmark file "
            "(5-core: 19,412 users, 11,924 items, 167,597 interactions) and its item attributes",
            page="https://github.com/RUCAIBox/CIKM2020-S3Rec",
            terms=AMAZON_TERMS + "; the S3-Rec preprocessing: K. Zhou et al., CIKM 2020",
            config="configs/amazon.py:toys", data_file="Toys_and_Games.txt",
            downloads=(
                Download(_S3REC + "Toys_and_Games.txt", "Toys_and_Games.txt",
                         "176c680c688d497598c4a89a03b402c0fe78d795e5db335c2e78dd5f2d778a3f",
                         922166),
                Download(_S3REC + "Toys_and_Games_item2attributes.json",
                         "Toys_and_Games_item2attributes.json",
                         "d371acd25101eedac04afc727626464b7acec770c4eda708705d51eb76eb1ad0",
                         327536),
            ),
        ),
        Source(
            name="taobao", title="Taobao UserBehavior: 100,150,807 events (click, buy, cart, "
            "favourite) of 987,994 users on 4,162,024 items, 2017-11-25 to 12-03",
            page="https://tianchi.aliyun.com/dataset/649",
            terms="Alibaba Tianchi: research use only, after accepting the terms on the "
            "dataset's page; cite H. Zhu et al., Learning Tree-based Deep Model for "
            "Recommender Systems, KDD 2018",
            config="configs/taobao.py", data_file="UserBehavior.csv",
            note="the page needs a Tianchi sign-in: download UserBehavior.csv.zip there, then "
            "install it with --archive=UserBehavior.csv.zip (or the UserBehavior.csv inside)",
            downloads=(Download(None, "UserBehavior.csv.zip", None,
                                members={"UserBehavior.csv": "UserBehavior.csv"}),),
        ),
    )
}


def define_flags(flag_values: flags.FlagValues) -> None:
    flags.DEFINE_bool("list", False, "list the datasets: source, terms, checksum, where "
                      "they go, the command that trains on them", flag_values=flag_values)
    flags.DEFINE_string("dest", "data", "install under DEST/NAME", flag_values=flag_values)
    flags.DEFINE_multi_string(
        "archive", [], "install from this file, already downloaded, instead of downloading "
        "(repeat it for a dataset of several files)", flag_values=flag_values)
    flags.DEFINE_enum("category", "Books", list(AMAZON_CATEGORIES),
                      "amazon: the category", flag_values=flag_values)


def listing(dest: str) -> str:
    """--list: every dataset with its files, checksums, terms and training command."""
    blocks = []
    for source in SOURCES.values():
        lines = [f"{source.name}: {source.title}", f"  page:     {source.page}"]
        for download in source.downloads:
            size = f"{download.size:,} bytes, " if download.size else ""
            checksum = (f"sha256 {download.sha256}" if download.sha256 else
                        "checksum unknown: computed and shown after download")
            lines.append(f"  file:     {download.url or download.filename + ' (manual download)'}"
                         f" ({size}{checksum})")
        installed = [n for d in source.downloads for n in d.installed_names()]
        lines.append(f"  installs: {os.path.join(dest, source.name)}/: {', '.join(installed)}")
        lines.append(f"  train:    {source.train_command(dest)}")
        lines.append(f"  terms:    {source.terms}")
        if source.note:
            lines.append(f"  note:     {source.note}")
        blocks.append("\n".join(lines))
    return "\n\n".join(blocks)


def sha256_of(path: str) -> str:
    with open(path, "rb") as f:
        return hashlib.file_digest(f, "sha256").hexdigest()


def download(item: Download, path: str) -> None:
    """Downloads `item` to PATH with a progress bar, resuming from `PATH.part` when an earlier
    try left one (HTTP Range; a server that ignores it sends the whole file again).

    Raises:
        SineError: the download failed (what was received is kept for the next try).
    """
    partial = path + ".part"
    have = os.path.getsize(partial) if os.path.exists(partial) else 0
    request = urllib.request.Request(item.url, headers={"User-Agent": "sine_jax-fetch"})
    if have:
        request.add_header("Range", f"bytes={have}-")
    try:
        with urllib.request.urlopen(request, timeout=_TIMEOUT_SECONDS) as response:
            if have and response.status != 206:  # the whole file again
                have = 0
            length = response.headers.get("Content-Length")
            total = have + int(length) if length and length.isdigit() else item.size
            with open(partial, "ab" if have else "wb") as f, tqdm(
                total=total, initial=have, unit="B", unit_scale=True, unit_divisor=1024,
                desc=item.filename, file=sys.stderr, mininterval=0.5,
            ) as bar:
                while block := response.read(_BLOCK):
                    f.write(block)
                    bar.update(len(block))
            if total is not None and os.path.getsize(partial) < total:
                raise OSError(f"the connection closed after {os.path.getsize(partial):,} of "
                              f"{total:,} bytes")
    except urllib.error.HTTPError as e:
        if e.code == 416 and have:  # the range starts at the end: the file is complete
            os.replace(partial, path)
            return
        raise SineError(f"downloading {item.url} failed (HTTP {e.code} {e.reason}); download "
                        f"the file yourself and pass --archive=FILE") from None
    except (OSError, urllib.error.URLError, ValueError) as e:
        received = os.path.getsize(partial) if os.path.exists(partial) else 0
        reason = getattr(e, "reason", None) or e
        raise SineError(
            f"downloading {item.url} failed ({reason}); {received:,} bytes kept in {partial}: "
            f"rerun the same command to resume, or download the file yourself and pass "
            f"--archive=FILE"
        ) from None
    os.replace(partial, path)


def verify(item: Download, path: str) -> str:
    """The SHA-256 of PATH; SineError when `item` has a published one and it differs."""
    actual = sha256_of(path)
    if item.sha256 and actual != item.sha256:
        raise SineError(
            f"{path}: sha256 {actual} is not the published {item.sha256} of {item.filename}"
            f"{f' ({item.url})' if item.url else ''}: a damaged or different file; delete it "
            f"and download it again"
        )
    return actual


def _archive_for(item: Download, archives: list[str], single: bool) -> str | None:
    """The --archive file given for `item`: the only one for a one-file dataset, else the one
    named as the item is (or as its only member)."""
    if single:
        return archives[0]
    names = {item.filename, *(item.members or {})}
    return next((a for a in archives if os.path.basename(a) in names), None)


def _unpack(item: Download, path: str, into: str) -> None:
    """Puts `item`'s installed files from PATH (the file itself or a zip archive) into INTO.

    Raises:
        SineError: not a zip archive where one is expected, an unreadable archive, or a
            member missing.
    """
    if item.members is None:
        shutil.copyfile(path, os.path.join(into, item.filename))
        return
    if not zipfile.is_zipfile(path):
        only = next(iter(item.members.items())) if len(item.members) == 1 else None
        if only and os.path.basename(path) == os.path.basename(only[0]):
            shutil.copyfile(path, os.path.join(into, only[1]))  # the archive's one file itself
            return
        raise SineError(f"{path}: not a zip archive; expected {item.filename}")
    try:
        with zipfile.ZipFile(path) as archive:
            present = set(archive.namelist())
            missing = [m for m in item.members if m not in present]
            if missing:
                raise SineError(f"{path}: the archive has no {missing[0]}; expected "
                                f"{item.filename} as published at {item.url or 'its page'}")
            for member, name in item.members.items():
                with archive.open(member) as src, open(os.path.join(into, name), "wb") as dst:
                    shutil.copyfileobj(src, dst, _BLOCK)
    except (zipfile.BadZipFile, OSError, EOFError) as e:
        raise SineError(f"{path}: unreadable zip archive ({e}); download it again") from None


def install(source: Source, dest: str, archives: list[str]) -> list[str]:
    """Downloads (or takes from `archives`) every file of SOURCE, verifies it and installs
    the files in DEST/NAME, replacing an earlier install only when all are in place.

    Returns:
        One line per file: its name and checksum, verified or computed.

    Raises:
        SineError: a failed download, a checksum that differs, a bad archive, an --archive
            that fits no file of the dataset, or a file that cannot be downloaded directly.
    """
    target = os.path.join(dest, source.name)
    downloads_dir = os.path.join(dest, ".downloads")
    os.makedirs(downloads_dir, exist_ok=True)
    used = set()
    report = []
    staging = tempfile.mkdtemp(prefix=f".{source.name}-", dir=dest)
    try:
        for item in source.downloads:
            path = _archive_for(item, archives, single=len(source.downloads) == 1) if (
                archives) else None
            if archives and path is None:
                raise SineError(f"no --archive for {item.filename} of {source.name}; give "
                                f"one per file: {', '.join(d.filename for d in source.downloads)}")
            if path is None and item.url is None:
                raise SineError(f"{source.name} cannot be downloaded directly ({source.page}): "
                                f"{source.note}")
            if path is None:
                path = os.path.join(downloads_dir, item.filename)
                download(item, path)
            elif not os.path.isfile(path):
                raise SineError(f"--archive={path}: no such file")
            used.add(path)
            try:
                checksum = verify(item, path)
            except SineError:
                if path.startswith(downloads_dir + os.sep):
                    os.remove(path)  # a rerun downloads it afresh
                raise
            _unpack(item, path, staging)
            state = "verified" if item.sha256 else "computed (no published checksum to check)"
            report.append(f"{os.path.basename(path)}: sha256 {checksum} {state}")
            if path.startswith(downloads_dir + os.sep):
                os.remove(path)  # the installed files are what is kept
        unused = [a for a in archives if a not in used]
        if unused:
            raise SineError(f"--archive={unused[0]}: not a file of {source.name} ("
                            f"{', '.join(d.filename for d in source.downloads)})")
        if os.path.exists(target):
            shutil.rmtree(target)
        os.replace(staging, target)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return report


@cli.tool
def main(argv=None):
    args = cli.parse_flags(define_flags, argv, __doc__, positional="name")
    if args.list:
        print(listing(args.dest))
        return
    if args.name is None:
        raise cli.UsageError(f"give a dataset: {', '.join(SOURCES)} (or --list)")
    if args.name not in SOURCES:
        raise cli.UsageError(f"unknown dataset {args.name!r}; one of {', '.join(SOURCES)} "
                             f"(--list describes them)")
    source = amazon(args.category) if args.name == "amazon" else SOURCES[args.name]
    try:
        os.makedirs(args.dest, exist_ok=True)
        report = install(source, args.dest, args.archive)
    except OSError as e:
        raise SineError(f"{e.filename or args.dest}: {e.strerror or e}") from None
    target = os.path.join(args.dest, source.name)
    print(f"installed {target}/: {', '.join(sorted(os.listdir(target)))}")
    for line in report:
        print(f"  {line}")
    print(f"terms: {source.terms}")
    print(f"train on it:\n  {source.train_command(args.dest)}")


if __name__ == "__main__":
    sys.exit(main())
