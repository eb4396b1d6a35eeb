"""A synthetic app-store impression log with planted ground truth.

Modelled on the Google Play setting of Cheng et al. 2016 ("Wide & Deep Learning for
Recommender Systems"): a user, the apps they have installed, an impression app, some
context, and whether the user installed the app. The data exists so that the claims of
the paper can be checked end to end: the label is driven by *both* effects the paper is
about, each planted with a known size, so a Wide & Deep model should beat both a
wide-only and a deep-only model, and a benchmark can compare any model with the true
install probability.

Schema (CSV column order = ``configs/appstore.toml``)::

    day             "YYYY-MM-DD"
    user_id         "u000123"; ~100k users, activity is log-normal (some users are seen a lot)
    country         20 ISO codes, Zipf-skewed (US and IN dominate)
    language        the country's main language (85%), otherwise a second language
    age_bucket      18-24 25-34 35-44 45-54 55-64 65+
    device_class    low mid high
    installed_apps  "app00012|app00345|..." or "" : 0..20 apps per user (mean ~5.4, 12% none),
                    chosen by Zipf popularity (exponent 1) and the user's taste for categories
    impression_app  "app00042"; drawn by popularity among live apps
    app_category    25 categories
    app_age_days    day - launch day (0 on launch day)
    app_rating      1.0..5.0, one decimal
    app_installs    heavy tailed: a log-normal daily install rate times the app's age
    hour            0..23, evening-heavy
    day_of_week     Mon..Sun, from the date
    installed       0/1 label

Drift. The catalogue starts with 3,000 apps; 45 apps (1.5%) launch every day and are
promoted for their first week, and every app has an exponentially distributed lifetime
(mean 70 days) after which its impression weight decays with a 4-day time constant. So
the ``impression_app`` vocabulary changes from day to day, and a model trained on old
days keeps meeting apps it has never seen. By day 30 about half the impressions go to
apps launched since day 0, and rows holding a planted pair fall from 13% to ~7% as the
pairs' apps fade.

Label. ``installed ~ Bernoulli(sigmoid(logit))``; magnitudes measured on 200k rows of
day 0 (seed 0)::

    logit = BIAS = -3.3                                                  base rate ~9.5%
          + pair boost            memorization: 3,000 random (installed app A, impression
                                  app B) pairs among the 200 most popular apps, U(1.5, 3.0)
                                  logits per pair present. 13% of rows hold a pair and
                                  install at ~37% vs ~5% without; std 1.0 over all rows
          + 1.0 * affinity        generalization: standardised dot(user taste, app vector),
                                  std 1.0; install rate ~4% / 18% in its bottom / top quartile
          + 0.4 * (rating - 3.9)                                         std ~0.19
          + 1.0 * exp(-app_age_days / 7)        new apps get installed   std ~0.04 on day 0,
                                                                         more as apps launch
          + 0.15 * (log10(app_installs) - 6.3)                           std ~0.18
          + 0.2 * cos(2 pi (hour - 21) / 24)    evening installs         std ~0.12
          + device effect (low -0.2, mid 0, high +0.15)                  std ~0.13

With the true logit as score the AUC is ~0.85; dropping the pair boost from it gives
~0.70 and dropping the affinity ~0.75.

The two main effects have the same weight but different shapes, and that is the point.
The pairs are random, not low rank, so embeddings can only approximate them, while the
``installed_apps x impression_app`` cross learns each one exactly once it has seen it
often enough: in 200k rows ~1,000 pairs occur at least 5 times (the config's vocabulary
threshold), those among the most popular apps hundreds of times. The affinity is smooth:
the user's taste vector (dim 8) is the sum of vectors for country, language and age
bucket plus the mean vector of the installed apps, and an app's vector is its category's
vector plus noise. It carries over to rare and brand-new apps through their category and
to rare users through their demographics, which embeddings learn and crosses cannot. The
logit depends only on columns of the row, so the true probability is learnable, and
:class:`DayImpressions` hands it to benchmarks as an upper bound.

Determinism. The world (users, catalogue, planted pairs) depends only on the seed; the
apps launched on day d and the rows of day d come from random streams keyed by
(seed, d). Day k is therefore the same whether it is generated alone or after days
0..k-1, which is what lets a nightly job produce one day at a time.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import functools
import io

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv

from transforms import paths

COLUMNS = ("day", "user_id", "country", "language", "age_bucket", "device_class",
           "installed_apps", "impression_app", "app_category", "app_age_days", "app_rating",
           "app_installs", "hour", "day_of_week", "installed")
DEFAULT_START_DATE = "2026-01-01"

# Demographics: (country, main language, second language), most frequent first.
COUNTRIES = (
    ("US", "en", "es"), ("IN", "hi", "en"), ("BR", "pt", "en"), ("ID", "id", "en"),
    ("MX", "es", "en"), ("JP", "ja", "en"), ("DE", "de", "en"), ("GB", "en", "hi"),
    ("FR", "fr", "en"), ("RU", "ru", "en"), ("TR", "tr", "en"), ("KR", "ko", "en"),
    ("ES", "es", "en"), ("IT", "it", "en"), ("VN", "vi", "en"), ("PH", "tl", "en"),
    ("CA", "en", "fr"), ("NG", "en", "yo"), ("EG", "ar", "en"), ("PL", "pl", "en"),
)
LANGUAGES = tuple(sorted({lang for _, main, second in COUNTRIES for lang in (main, second)}))
COUNTRY_ZIPF_EXPONENT = 1.1
MAIN_LANGUAGE_SHARE = 0.85
AGE_BUCKETS = ("18-24", "25-34", "35-44", "45-54", "55-64", "65+")
AGE_SHARES = (0.22, 0.28, 0.2, 0.14, 0.1, 0.06)
DEVICE_CLASSES = ("low", "mid", "high")
DEVICE_SHARES = (0.35, 0.45, 0.2)
DAYS_OF_WEEK = ("Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun")
# Share of impressions per hour: quiet at night, peak in the evening.
HOUR_SHARES = 1.0 + 0.8 * np.cos(2 * np.pi * (np.arange(24) - 20) / 24)

CATEGORIES = (
    "action_games", "puzzle_games", "casual_games", "social", "communication",
    "productivity", "tools", "photography", "music", "video", "news", "shopping", "finance",
    "travel", "health", "education", "entertainment", "lifestyle", "sports", "maps", "food",
    "books", "weather", "business", "dating",
)

N_USERS = 100_000
N_BASE_APPS = 3_000
LAUNCHES_PER_DAY = 45                 # 1.5% of the starting catalogue
MEAN_LIFETIME_DAYS = 70.0             # before an app starts to fade
FADE_DAYS = 4.0                       # time constant of the fade
PROMOTION_DAYS = 7.0                  # new apps get extra impressions ...
PROMOTION_BOOST = 1.0                 # ... up to (1 + this) times their popularity
MAX_BASE_APP_AGE_DAYS = 1_500
POPULARITY_ZIPF_EXPONENT = 1.0
MEAN_INSTALL_DRAWS = 7.0              # per user, before duplicate draws collapse
MAX_INSTALLED_APPS = 20

LATENT_DIM = 8
APP_VECTOR_NOISE = 0.5                # an app's vector = category vector + this * N(0, I)
DEMOGRAPHIC_VECTOR_SCALE = 0.7
LANGUAGE_VECTOR_SCALE = 0.3
CATEGORY_TASTE_SHARPNESS = 1.5        # how strongly taste steers which apps a user installs

PAIRS = 3_000
PAIR_APP_POOL = 200                   # pairs are drawn among the most popular apps
PAIR_BOOST_RANGE = (1.5, 3.0)

BIAS = -3.3
AFFINITY_WEIGHT = 1.0
RATING_WEIGHT, RATING_CENTER = 0.4, 3.9
NEW_APP_BOOST, NEW_APP_DAYS = 1.0, 7.0
INSTALLS_WEIGHT, INSTALLS_CENTER_LOG10 = 0.15, 6.3
HOUR_WEIGHT, PEAK_INSTALL_HOUR = 0.2, 21
DEVICE_EFFECT = np.array([-0.2, 0.0, 0.15])

# Random streams: one per purpose, keyed by the seed (and the day where there is one).
_WORLD_STREAM, _LAUNCH_STREAM, _DAY_STREAM = 1, 2, 3


@dataclasses.dataclass(frozen=True)
class Catalogue:
    """Every app launched up to some day; base apps first, then one block per launch day."""
    category: np.ndarray        # int, index into CATEGORIES
    launch_day: np.ndarray      # int, negative for the starting catalogue
    fade_day: np.ndarray        # float, when the app starts to lose impressions
    popularity: np.ndarray      # float, Zipf weight
    rating: np.ndarray          # float, one decimal
    daily_installs: np.ndarray  # float, log-normal
    vector: np.ndarray          # (apps, LATENT_DIM)

    def __len__(self) -> int:
        return len(self.category)


@dataclasses.dataclass(frozen=True)
class World:
    """Everything that stays fixed across days for one seed, including the planted truth.

    Treat as read-only: :func:`make_world` caches it.
    """
    seed: int
    base_apps: Catalogue
    category_vectors: np.ndarray      # (len(CATEGORIES), LATENT_DIM)
    user_country: np.ndarray
    user_language: np.ndarray
    user_age: np.ndarray
    user_device: np.ndarray
    user_activity: np.ndarray         # sampling weight of each user's impressions
    installed_offsets: np.ndarray     # user u has installed_apps[offsets[u]:offsets[u + 1]]
    installed_apps: np.ndarray
    user_vectors: np.ndarray          # (N_USERS, LATENT_DIM): demographics + installed apps
    user_ids: pa.Array                # the user_id column, per user
    installed_text: pa.Array          # the installed_apps column, per user
    pair_keys: np.ndarray             # sorted _pair_key(installed app, impression app)
    pair_boosts: np.ndarray           # logit boost of each planted pair, aligned with pair_keys
    affinity_mean: float              # standardise dot(user, app) so its weight means something
    affinity_std: float

    @property
    def planted_pairs(self) -> np.ndarray:
        """(PAIRS, 2) app indices: (installed app, impression app)."""
        return np.stack([self.pair_keys >> 32, self.pair_keys & 0xFFFFFFFF], axis=1)

    def catalogue(self, day_index: int) -> Catalogue:
        """The base apps plus the apps launched on days 1..day_index."""
        launches = [_launch_apps(self.seed, day, self.category_vectors)
                    for day in range(1, day_index + 1)]
        return Catalogue(*(np.concatenate([getattr(self.base_apps, f.name)]
                                          + [getattr(batch, f.name) for batch in launches])
                           for f in dataclasses.fields(Catalogue)))


@dataclasses.dataclass(frozen=True)
class DayImpressions:
    """One day's rows plus the truth behind their labels, row-aligned with ``table``."""
    table: pa.Table
    user: np.ndarray
    app: np.ndarray
    pair_boost: np.ndarray        # summed boost of the planted pairs present (0 for most rows)
    affinity: np.ndarray          # standardised latent affinity, before AFFINITY_WEIGHT
    logit: np.ndarray
    probability: np.ndarray       # true install probability


def app_names(indices: np.ndarray) -> np.ndarray:
    return np.char.add("app", np.char.zfill(indices.astype(str), 5))


def user_names(indices: np.ndarray) -> np.ndarray:
    return np.char.add("u", np.char.zfill(indices.astype(str), 6))


def _pair_key(installed_app: np.ndarray, impression_app: np.ndarray) -> np.ndarray:
    return (installed_app.astype(np.int64) << 32) | impression_app.astype(np.int64)


def _normalised(weights: np.ndarray) -> np.ndarray:
    return weights / weights.sum()


def _new_apps(rng: np.random.Generator, launch_day: np.ndarray, popularity_rank: np.ndarray,
              category_vectors: np.ndarray) -> Catalogue:
    n = len(launch_day)
    category = rng.integers(len(CATEGORIES), size=n)
    popularity = (popularity_rank + 1.0) ** -POPULARITY_ZIPF_EXPONENT
    return Catalogue(
        category=category,
        launch_day=launch_day,
        fade_day=np.maximum(launch_day, 0) + rng.exponential(MEAN_LIFETIME_DAYS, size=n),
        popularity=popularity,
        rating=np.round(np.clip(rng.normal(RATING_CENTER, 0.5, size=n), 1.0, 5.0), 1),
        # Popular apps are installed more; the top app gets ~200k installs a day.
        daily_installs=2e5 * popularity * rng.lognormal(0.0, 1.0, size=n),
        vector=category_vectors[category] + APP_VECTOR_NOISE * rng.normal(size=(n, LATENT_DIM)),
    )


def _launch_apps(seed: int, day: int, category_vectors: np.ndarray) -> Catalogue:
    rng = np.random.default_rng([seed, _LAUNCH_STREAM, day])
    # A new app is as likely as any to become a hit: its popularity is that of a random rank.
    return _new_apps(rng, np.full(LAUNCHES_PER_DAY, day),
                     rng.integers(N_BASE_APPS, size=LAUNCHES_PER_DAY), category_vectors)


def _sample_installed_apps(rng: np.random.Generator, taste: np.ndarray, apps: Catalogue,
                           category_vectors: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Installed apps per user as CSR (offsets, apps): a category by taste, then an app of
    that category by popularity. Duplicate draws collapse, so counts end up a bit lower."""
    n_users = len(taste)
    counts = np.minimum(rng.geometric(1.0 / (MEAN_INSTALL_DRAWS + 1), size=n_users) - 1,
                        MAX_INSTALLED_APPS)
    owner = np.repeat(np.arange(n_users), counts)

    category_popularity = np.bincount(apps.category, weights=apps.popularity,
                                      minlength=len(CATEGORIES))
    scores = CATEGORY_TASTE_SHARPNESS * (taste @ category_vectors.T) / np.sqrt(LATENT_DIM)
    category_cdf = np.cumsum(np.exp(scores - scores.max(axis=1, keepdims=True))
                             * category_popularity, axis=1)
    # Each user's CDF, shifted to (u, u + 1], inverted with one search over all users.
    category_cdf = (category_cdf / category_cdf[:, -1:] + np.arange(n_users)[:, None]).ravel()
    category = (np.searchsorted(category_cdf, owner + rng.random(len(owner)), side="right")
                - owner * len(CATEGORIES))

    # Invert the within-category popularity CDF; category c occupies the interval (c, c + 1].
    by_category = np.lexsort((np.arange(len(apps)), apps.category))
    sorted_category = apps.category[by_category]
    cumulative = np.cumsum(apps.popularity[by_category])
    category_start = np.concatenate([[0.0], np.cumsum(category_popularity)[:-1]])
    within_cdf = sorted_category + ((cumulative - category_start[sorted_category])
                                    / category_popularity[sorted_category])
    position = np.searchsorted(within_cdf, category + rng.random(len(owner)), side="right")
    app = by_category[np.minimum(position, len(apps) - 1)]  # rounding can overshoot the end

    keys = np.sort(_pair_key(owner, app))
    keys = keys[np.concatenate([[True], keys[1:] != keys[:-1]])]
    owner, app = keys >> 32, keys & 0xFFFFFFFF
    offsets = np.zeros(n_users + 1, dtype=np.int64)
    offsets[1:] = np.cumsum(np.bincount(owner, minlength=n_users))
    return offsets, app


def _plant_pairs(rng: np.random.Generator,
                 popularity: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """PAIRS distinct (A, B), A != B, uniformly among the most popular apps."""
    pool = np.argsort(-popularity, kind="stable")[:PAIR_APP_POOL]
    flat = rng.choice(PAIR_APP_POOL * (PAIR_APP_POOL - 1), size=PAIRS, replace=False)
    first, second = np.divmod(flat, PAIR_APP_POOL - 1)
    second += second >= first      # skip the diagonal
    keys = _pair_key(pool[first], pool[second])
    boosts = rng.uniform(*PAIR_BOOST_RANGE, size=PAIRS)
    order = np.argsort(keys)
    return keys[order], boosts[order]


def _installed_rows(world: World, users: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(row, installed app) for every app installed by the user of every row."""
    starts, ends = world.installed_offsets[users], world.installed_offsets[users + 1]
    lengths = ends - starts
    row = np.repeat(np.arange(len(users)), lengths)
    first_of_row = np.repeat(np.cumsum(lengths) - lengths, lengths)
    position = np.repeat(starts, lengths) + np.arange(len(row)) - first_of_row
    return row, world.installed_apps[position]


@functools.lru_cache(maxsize=4)
def make_world(seed: int = 0) -> World:
    """The users, the starting catalogue and the planted truth for ``seed``."""
    rng = np.random.default_rng([seed, _WORLD_STREAM])
    category_vectors = rng.normal(size=(len(CATEGORIES), LATENT_DIM))
    base_apps = _new_apps(rng, -rng.integers(1, MAX_BASE_APP_AGE_DAYS + 1, size=N_BASE_APPS),
                          rng.permutation(N_BASE_APPS), category_vectors)

    country = rng.choice(len(COUNTRIES), size=N_USERS,
                         p=_normalised(1.0 / np.arange(1, len(COUNTRIES) + 1)
                                       ** COUNTRY_ZIPF_EXPONENT))
    main_language, second_language = (
        np.array([LANGUAGES.index(c[i]) for c in COUNTRIES]) for i in (1, 2))
    language = np.where(rng.random(N_USERS) < MAIN_LANGUAGE_SHARE,
                        main_language[country], second_language[country])
    age = rng.choice(len(AGE_BUCKETS), size=N_USERS, p=AGE_SHARES)
    device = rng.choice(len(DEVICE_CLASSES), size=N_USERS, p=DEVICE_SHARES)
    activity = rng.lognormal(0.0, 1.0, size=N_USERS)

    demographic_vectors = (
        DEMOGRAPHIC_VECTOR_SCALE * rng.normal(size=(len(COUNTRIES), LATENT_DIM))[country]
        + DEMOGRAPHIC_VECTOR_SCALE * rng.normal(size=(len(AGE_BUCKETS), LATENT_DIM))[age]
        + LANGUAGE_VECTOR_SCALE * rng.normal(size=(len(LANGUAGES), LATENT_DIM))[language])
    # Taste beyond demographics is private, but shows in which apps the user installed.
    private_taste = rng.normal(size=(N_USERS, LATENT_DIM))
    offsets, installed = _sample_installed_apps(rng, demographic_vectors + private_taste,
                                                base_apps, category_vectors)
    owner = np.repeat(np.arange(N_USERS), np.diff(offsets))
    installed_sum = np.stack([np.bincount(owner, weights=base_apps.vector[installed, d],
                                          minlength=N_USERS) for d in range(LATENT_DIM)], axis=1)
    user_vectors = demographic_vectors + installed_sum / np.maximum(np.diff(offsets), 1)[:, None]

    # Standardise the affinity over typical impressions: activity-weighted users,
    # popularity-weighted apps.
    sample_users = rng.choice(N_USERS, size=20_000, p=_normalised(activity))
    sample_apps = rng.choice(N_BASE_APPS, size=20_000, p=_normalised(base_apps.popularity))
    affinity = np.sum(user_vectors[sample_users] * base_apps.vector[sample_apps], axis=1)

    pair_keys, pair_boosts = _plant_pairs(rng, base_apps.popularity)
    installed_lists = pa.ListArray.from_arrays(
        pa.array(offsets.astype(np.int32)), pa.array(app_names(installed)))
    return World(
        seed=seed, base_apps=base_apps, category_vectors=category_vectors,
        user_country=country, user_language=language, user_age=age, user_device=device,
        user_activity=activity, installed_offsets=offsets, installed_apps=installed,
        user_vectors=user_vectors, user_ids=pa.array(user_names(np.arange(N_USERS))),
        installed_text=pc.binary_join(installed_lists, "|"),
        pair_keys=pair_keys, pair_boosts=pair_boosts,
        affinity_mean=float(affinity.mean()), affinity_std=float(affinity.std()),
    )


def _date_of(day_index: int) -> dt.date:
    return dt.date.fromisoformat(DEFAULT_START_DATE) + dt.timedelta(days=day_index)


def simulate_day(world: World, day_index: int, rows: int, *,
                 date: dt.date | str | None = None, part: int | None = None) -> DayImpressions:
    """One day of impressions with their true install probabilities.

    ``date`` only names the day (the ``day`` and ``day_of_week`` columns); it defaults to
    DEFAULT_START_DATE + day_index. Everything random is keyed by (seed, day_index), and
    by ``part`` for one part of a day simulated in several (see :func:`write_log`).
    """
    if day_index < 0:
        raise ValueError(f"day_index must be >= 0, got {day_index}")
    date = _date_of(day_index) if date is None else dt.date.fromisoformat(str(date))
    rng = np.random.default_rng([world.seed, _DAY_STREAM, day_index]
                                + ([] if part is None else [part]))
    apps = world.catalogue(day_index)
    age = day_index - apps.launch_day
    impression_weight = (apps.popularity
                         * (1.0 + PROMOTION_BOOST * np.exp(-age / PROMOTION_DAYS))
                         * np.exp(-np.maximum(day_index - apps.fade_day, 0.0) / FADE_DAYS))
    impression_p = _normalised(impression_weight)

    # Rows are independent draws, so their order is already random: no shuffle needed.
    user = rng.choice(N_USERS, size=rows, p=_normalised(world.user_activity))
    app = rng.choice(len(apps), size=rows, p=impression_p)
    # The store does not show users apps they already have: redraw those until none is left.
    redraw = np.arange(rows)
    while len(redraw):
        row, installed = _installed_rows(world, user[redraw])
        redraw = redraw[np.unique(row[installed == app[redraw][row]])]
        app[redraw] = rng.choice(len(apps), size=len(redraw), p=impression_p)
    hour = rng.choice(24, size=rows, p=_normalised(HOUR_SHARES))

    row, installed = _installed_rows(world, user)
    keys = _pair_key(installed, app[row])
    slot = np.minimum(np.searchsorted(world.pair_keys, keys), len(world.pair_keys) - 1)
    planted = world.pair_keys[slot] == keys
    pair_boost = np.bincount(row[planted], weights=world.pair_boosts[slot[planted]],
                             minlength=rows)
    affinity = (np.sum(world.user_vectors[user] * apps.vector[app], axis=1)
                - world.affinity_mean) / world.affinity_std
    app_age = age[app]
    installs = np.maximum(np.round(apps.daily_installs[app] * (app_age + 1)), 1).astype(np.int64)
    logit = (BIAS + pair_boost + AFFINITY_WEIGHT * affinity
             + RATING_WEIGHT * (apps.rating[app] - RATING_CENTER)
             + NEW_APP_BOOST * np.exp(-app_age / NEW_APP_DAYS)
             + INSTALLS_WEIGHT * (np.log10(installs) - INSTALLS_CENTER_LOG10)
             + HOUR_WEIGHT * np.cos(2 * np.pi * (hour - PEAK_INSTALL_HOUR) / 24)
             + DEVICE_EFFECT[world.user_device[user]])
    probability = 1.0 / (1.0 + np.exp(-logit))
    label = (rng.random(rows) < probability).astype(np.int64)

    table = pa.table({
        "day": pa.repeat(pa.scalar(date.isoformat()), rows),
        "user_id": world.user_ids.take(user),
        "country": pa.array([c[0] for c in COUNTRIES]).take(world.user_country[user]),
        "language": pa.array(LANGUAGES).take(world.user_language[user]),
        "age_bucket": pa.array(AGE_BUCKETS).take(world.user_age[user]),
        "device_class": pa.array(DEVICE_CLASSES).take(world.user_device[user]),
        "installed_apps": world.installed_text.take(user),
        "impression_app": pa.array(app_names(np.arange(len(apps)))).take(app),
        "app_category": pa.array(CATEGORIES).take(apps.category[app]),
        "app_age_days": app_age,
        "app_rating": apps.rating[app],
        "app_installs": installs,
        "hour": hour,
        "day_of_week": pa.repeat(pa.scalar(DAYS_OF_WEEK[date.weekday()]), rows),
        "installed": label,
    })
    return DayImpressions(table=table, user=user, app=app, pair_boost=pair_boost,
                          affinity=affinity, logit=logit, probability=probability)


def generate_day(day_index: int, rows: int, seed: int = 0, *,
                 date: dt.date | str | None = None) -> pa.Table:
    """One day's impressions as an Arrow table with the CSV's columns and values."""
    return simulate_day(make_world(seed), day_index, rows, date=date).table


def write_log(out_dir: str, *, days: int = 1, rows_per_day: int = 100_000, seed: int = 0,
              start_date: str = DEFAULT_START_DATE, shards: int = 4,
              first_day_index: int = 0) -> list[str]:
    """Writes ``<out_dir>/day=YYYY-MM-DD/part-0000i-of-0000N.csv`` for ``days`` days
    starting at day index ``first_day_index``, which is dated ``start_date``.

    Day k's files are the same whether they are written with days 0..k-1 or alone
    (``first_day_index=k``, ``start_date`` = its date). A day of more than PART_ROWS rows
    is simulated in parts of at most PART_ROWS rows, each its own random stream and file
    (at least ``shards`` files), so the generator holds one part in memory, not the day.
    Returns the written paths.
    """
    world = make_world(seed)
    first_date = dt.date.fromisoformat(start_date)
    written = []
    for offset in range(days):
        date = first_date + dt.timedelta(days=offset)
        day_dir = paths.join(out_dir, f"day={date.isoformat()}")
        paths.makedirs(day_dir)
        day_index = first_day_index + offset
        if rows_per_day <= PART_ROWS:
            table = simulate_day(world, day_index, rows_per_day, date=date).table
            bounds = np.linspace(0, rows_per_day, shards + 1).astype(int)
            files = [(lambda start=start, end=end: table.slice(start, end - start))
                     for start, end in zip(bounds, bounds[1:])]
        else:
            parts = max(shards, -(-rows_per_day // PART_ROWS))
            bounds = np.linspace(0, rows_per_day, parts + 1).astype(int)
            files = [(lambda part=part, n=end - start:
                      simulate_day(world, day_index, n, date=date, part=part).table)
                     for part, (start, end) in enumerate(zip(bounds, bounds[1:]))]
        for shard, make_table in enumerate(files):
            path = paths.join(day_dir, f"part-{shard:05d}-of-{len(files):05d}.csv")
            written.append(paths.write_bytes(path, csv_bytes(make_table())))
    return written


PART_ROWS = 1_000_000  # a day larger than this is simulated a part at a time


def csv_bytes(table: pa.Table) -> bytes:
    """The table as CSV with a header line; the generated values hold no comma to quote."""
    out = io.BytesIO()
    out.write((",".join(table.column_names) + "\n").encode())
    pacsv.write_csv(table, out, pacsv.WriteOptions(include_header=False, quoting_style="none"))
    return out.getvalue()
