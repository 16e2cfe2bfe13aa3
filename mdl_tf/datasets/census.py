"""UCI Census-Income (KDD) as a two-scenario, two-task table (the MMoE task pair).

Reads the official UCI file `census-income.test.gz` (or `census-income.data.gz`, or either
uncompressed): 42 comma-separated columns, no header, values padded with a leading space.
Each row becomes
  scenario       sex: male / female (the data set has no native scenarios);
  income_50k     income == "50000+.";   never_married  marital_stat == "Never married";
  features       the 7 numeric columns (dense) and the 31 remaining categorical ones.
`income`, `marital_stat` and `instance_weight` are not written at all, so no schema can
use them as features (UCI: the weight must not be a feature; the other two are the labels).
Known caveat kept by standard practice: `detailed_household_and_family_stat` partly
encodes marital status (hence never_married AUC ~0.99).
Split: the shared README's reference hash split, key str(i) for the 0-based data row i,
md5 bucket 0-7 train, 8 valid, 9 test (79,529 / 10,071 / 10,162 rows of the test file).
`prepare()` writes train.csv / valid.csv / test.csv and a recipe-free schema.yaml.
"""
from __future__ import annotations

import argparse
import gzip
import os

from mdl_tf import datasets
from mdl_tf.datasets.splits import reference_split

HERE = os.path.dirname(os.path.abspath(__file__))
# The project's shared data sits beside the repository: <repo>/../shared/data.
DEFAULT_RAW_DIR = os.path.normpath(
    os.path.join(HERE, "..", "..", "..", "shared", "data", "census_income_kdd", "raw"))
DEFAULT_RAW_FILE = "census-income.test.gz"
SPLITS = ("train", "valid", "test")
# UCI census-income.names order (the shared labeled CSV's header agrees).
RAW_COLUMNS = (
    "age", "class_of_worker", "detailed_industry_recode", "detailed_occupation_recode",
    "education", "wage_per_hour", "enroll_in_edu_inst_last_wk", "marital_stat",
    "major_industry_code", "major_occupation_code", "race", "hispanic_origin", "sex",
    "member_of_a_labor_union", "reason_for_unemployment", "full_or_part_time_employment_stat",
    "capital_gains", "capital_losses", "dividends_from_stocks", "tax_filer_stat",
    "region_of_previous_residence", "state_of_previous_residence",
    "detailed_household_and_family_stat", "detailed_household_summary_in_household",
    "instance_weight", "migration_code_change_in_msa", "migration_code_change_in_reg",
    "migration_code_move_within_reg", "live_in_this_house_1_year_ago",
    "migration_prev_res_in_sunbelt", "num_persons_worked_for_employer",
    "family_members_under_18", "country_of_birth_father", "country_of_birth_mother",
    "country_of_birth_self", "citizenship", "own_business_or_self_employed",
    "fill_inc_questionnaire_for_veterans_admin", "veterans_benefits", "weeks_worked_in_year",
    "year", "income")
NEVER_FEATURES = ("income", "marital_stat", "instance_weight")
DENSE = ("age", "wage_per_hour", "capital_gains", "capital_losses", "dividends_from_stocks",
         "num_persons_worked_for_employer", "weeks_worked_in_year")
LOG1P = ("wage_per_hour", "capital_gains", "capital_losses", "dividends_from_stocks")
FEATURE_COLUMNS = tuple(c for c in RAW_COLUMNS if c not in NEVER_FEATURES)
LABELS = ("income_50k", "never_married")
COLUMNS = FEATURE_COLUMNS + ("scenario",) + LABELS
SCENARIOS = {"Male": "male", "Female": "female"}
INCOME_VALUES = ("- 50000.", "50000+.")


def raw_path(raw_dir: str, raw_file: str) -> str:
    path = os.path.join(raw_dir, raw_file)
    if not os.path.isfile(path):
        raise FileNotFoundError(
            f"Census-Income (KDD) file missing: {path} (download census-income.test.gz or "
            "census-income.data.gz from the UCI repository; pass its folder as raw_dir / "
            "--raw_dir, or --data_dir to mdl_tf.train)")
    return path


def parse_line(line: str, where: str) -> dict:
    """One raw line -> {column: stripped value} for RAW_COLUMNS."""
    values = [v.strip() for v in line.rstrip("\r\n").split(",")]
    if len(values) != len(RAW_COLUMNS):
        raise ValueError(f"{where}: expected {len(RAW_COLUMNS)} comma-separated fields, "
                         f"got {len(values)}")
    return dict(zip(RAW_COLUMNS, values))


def to_row(raw: dict, where: str) -> dict:
    """The output row: features, scenario and the two labels (no leaking column)."""
    if raw["sex"] not in SCENARIOS:
        raise ValueError(f"{where}: column 'sex': expected Male or Female, got '{raw['sex']}'")
    if raw["income"] not in INCOME_VALUES:
        raise ValueError(f"{where}: column 'income': expected one of {INCOME_VALUES}, "
                         f"got '{raw['income']}'")
    row = {c: raw[c] for c in FEATURE_COLUMNS}
    row["scenario"] = SCENARIOS[raw["sex"]]
    row["income_50k"] = str(int(raw["income"] == "50000+."))
    row["never_married"] = str(int(raw["marital_stat"] == "Never married"))
    return row


def build_splits(path: str) -> dict:
    """{train|valid|test: rows} of the file at path, under the reference split."""
    opener = gzip.open if path.endswith(".gz") else open
    out = {s: [] for s in SPLITS}
    with opener(path, "rt", encoding="latin-1") as fh:
        for i, line in enumerate(l for l in fh if l.strip()):
            where = f"{path}: data row {i}"
            row = to_row(parse_line(line, where), where)
            out[reference_split(str(i))].append(row)
    return out


def write_csv(path: str, rows: list) -> None:
    with open(path, "w") as fh:
        fh.write(",".join(COLUMNS) + "\n")
        fh.writelines(",".join(row[c] for c in COLUMNS) + "\n" for row in rows)


def prepare(out_dir, raw_dir=None, raw_file=DEFAULT_RAW_FILE):
    """Writes train.csv / valid.csv / test.csv and schema.yaml (no recipe) into out_dir."""
    parts = build_splits(raw_path(raw_dir or DEFAULT_RAW_DIR, raw_file))
    os.makedirs(out_dir, exist_ok=True)
    for name, rows in parts.items():
        write_csv(os.path.join(out_dir, f"{name}.csv"), rows)
    datasets.write_recipe_free_schema("census", out_dir)
    return out_dir


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--out_dir", required=True)
    p.add_argument("--raw_dir", default=DEFAULT_RAW_DIR, help="default: %(default)s")
    p.add_argument("--raw_file", default=DEFAULT_RAW_FILE,
                   help="file name inside --raw_dir (default: %(default)s)")
    a = p.parse_args(argv)
    try:
        prepare(a.out_dir, raw_dir=a.raw_dir, raw_file=a.raw_file)
    except (FileNotFoundError, ValueError) as e:
        p.exit(2, f"error: {e}\n")
    print(f"wrote {a.out_dir}/{{train,valid,test}}.csv and schema.yaml")


if __name__ == "__main__":
    main()
