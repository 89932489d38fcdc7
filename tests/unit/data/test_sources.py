import numpy as np
import pytest

from linreg_pl import CSVSource, InputError, MakeRegression, Points, SklearnDataset, SyntheticCurve, SyntheticLinear


def test_synthetic_linear_follows_its_truth_and_seed():
    source = SyntheticLinear(weight=[[2.0, -3.4], [1.0, 0.5]], bias=[4.2, -1.0], n_samples=2000, noise=0.0, seed=3)
    table = source.load()
    assert table.x.shape == (2000, 2) and table.y.shape == (2000, 2)
    np.testing.assert_allclose(table.y, table.x @ table.true_weight.T + table.true_bias, atol=1e-12)
    np.testing.assert_array_equal(
        table.x,
        SyntheticLinear(weight=[[2.0, -3.4], [1.0, 0.5]], bias=[4.2, -1.0], n_samples=2000, noise=0.0, seed=3).load().x,
    )
    assert abs(table.x.mean()) < 0.1 and abs(table.x.std() - 1) < 0.05


def test_synthetic_uniform_stays_in_range_and_noise_has_its_std():
    table = SyntheticLinear(
        weight=[3.0], bias=0.8, n_samples=5000, distribution="uniform", low=0, high=1, noise=0.5
    ).load()
    assert table.x.min() >= 0 and table.x.max() < 1
    residual = table.y - (3.0 * table.x + 0.8)
    assert residual.std() == pytest.approx(0.5, rel=0.05)


@pytest.mark.parametrize(
    "kwargs, match",
    [
        (dict(weight=[1.0], n_samples=0), "n_samples=0"),
        (dict(weight=[1.0], noise=-1), "noise=-1"),
        (dict(weight=[[1.0, 2.0]], bias=[1.0, 2.0]), "bias=.*one per target"),
        (dict(weight=[1.0], distribution="uniform", low=1.0, high=0.0), "low=1.0 must be below high"),
        (dict(weight=[1.0, float("nan")]), "NaN or infinite"),
    ],
)
def test_synthetic_rejects_impossible_parameters(kwargs, match):
    with pytest.raises(InputError, match=match):
        SyntheticLinear(**kwargs)


def test_synthetic_curve_is_its_formula_plus_noise_of_its_std():
    table = SyntheticCurve(n_samples=20000, low=-2.0, high=1.0, frequency=2.0, curvature=0.5, noise=0.3, seed=3).load()
    x, y = table.x[:, 0], table.y[:, 0]
    assert table.x.shape == table.y.shape == (20000, 1) and -2.0 <= x.min() and x.max() < 1.0
    residual = y - (np.sin(2.0 * x) + 0.5 * x**2)
    assert abs(residual.mean()) < 0.01 and residual.std() == pytest.approx(0.3, rel=0.02)
    assert table.true_weight is None  # no line generated it
    np.testing.assert_array_equal(SyntheticCurve(seed=3).load().y, SyntheticCurve(seed=3).load().y)


@pytest.mark.parametrize(
    "kwargs, match",
    [
        (dict(n_samples=0), "n_samples=0 must be a positive integer"),
        (dict(low=1.0, high=1.0), "low=1.0 must be below high=1.0"),
        (dict(noise=-1.0), "noise=-1.0 must be >= 0"),
    ],
)
def test_synthetic_curve_rejects_impossible_parameters(kwargs, match):
    with pytest.raises(InputError, match=match):
        SyntheticCurve(**kwargs)


def test_points_one_and_several_columns():
    table = Points(x=[[1, 2], [3, 4], [5, 7]], y=[1, 2, 3]).load()
    assert table.x.shape == (3, 2) and table.y.shape == (3, 1) and table.true_weight is None
    with pytest.raises(InputError, match="x has 2 rows but y has 3"):
        Points(x=[1, 2], y=[1, 2, 3])
    with pytest.raises(InputError, match="true_weight has shape"):
        Points(x=[1, 2], y=[1, 2], true_weight=[1.0, 2.0])


def test_make_regression_keeps_coefficients_and_2d_targets():
    from sklearn.datasets import make_regression

    table = MakeRegression(n_samples=100, n_features=1, noise=20.0, random_state=1).load()
    x, y, coef = make_regression(n_samples=100, n_features=1, noise=20.0, random_state=1, coef=True)
    assert table.y.shape == (100, 1)  # never (n,): a (B, 1) - (B,) loss would broadcast to (B, B)
    np.testing.assert_array_equal(table.x, x)
    np.testing.assert_array_equal(table.y[:, 0], y)
    assert table.true_weight[0, 0] == pytest.approx(float(coef))


def test_sklearn_datasets_shapes_and_names():
    diabetes = SklearnDataset("diabetes").load()
    assert diabetes.x.shape == (442, 10) and diabetes.y.shape == (442, 1) and "bmi" in diabetes.feature_names
    linnerud = SklearnDataset("linnerud").load()
    assert linnerud.y.shape == (20, 3) and linnerud.target_names == ["Weight", "Waist", "Pulse"]
    with pytest.raises(InputError, match="'iris' is not a bundled dataset"):
        SklearnDataset("iris")


def write(path, text, encoding="utf-8", newline="\n"):
    path.write_bytes(text.replace("\n", newline).encode(encoding))
    return path


@pytest.mark.parametrize("encoding, newline", [("utf-8", "\n"), ("utf-8-sig", "\r\n"), ("utf-8-sig", "\n")])
def test_csv_reads_bom_crlf_and_quotes(tmp_path, encoding, newline):
    path = write(tmp_path / "d.csv", 'size,"rooms, total",price\n1.5,2,10\n2.5,"3",20\n', encoding, newline)
    table = CSVSource(str(path), target="price").load()
    assert table.feature_names == ["size", "rooms, total"]
    np.testing.assert_array_equal(table.x, [[1.5, 2], [2.5, 3]])
    np.testing.assert_array_equal(table.y, [[10], [20]])


def test_csv_feature_selection_and_several_targets(tmp_path):
    path = write(tmp_path / "d.csv", "a,b,c,t1,t2\n1,2,3,4,5\n6,7,8,9,10\n")
    table = CSVSource(str(path), target=["t1", "t2"], features=["c", "a"]).load()
    assert table.feature_names == ["c", "a"] and table.target_names == ["t1", "t2"]
    np.testing.assert_array_equal(table.x, [[3, 1], [8, 6]])


@pytest.mark.parametrize(
    "content, kwargs, match",
    [
        (None, {}, r"CSV file not found: '.*missing.csv'"),
        ("", {}, "is empty"),
        ("a,b,y\n", {}, "header but no data rows"),
        ("a,b,y\n1,2,3\n", {"target": "Y"}, r"column 'Y' is not in .*did you mean 'y'"),
        ("height,b,y\n1,2,3\n", {"features": ["heigth"]}, r"column 'heigth' is not in .*Did you mean 'height'"),
        ("a,b,y\n1,x,3\n2,4,5\n", {}, r"column 'b' .* is not numeric \(e.g. 'x' on data row 1\)"),
        ("a,b,y\n1,2,x\n2,4,5\n", {}, r"column 'y' .* is not numeric \(e.g. 'x' on data row 1\)"),
        ("a,b,y\n1,,3\n2,4,\n3,,1\n", {}, r"missing values \('b': 2, 'y': 1\).*drop_missing"),
        ("a,y\n1,3\n", {"features": ["a", "y"]}, r"both as features and as target"),
    ],
)
def test_csv_bad_input_names_the_culprit(tmp_path, content, kwargs, match):
    path = tmp_path / "missing.csv"
    if content is not None:
        path = write(tmp_path / "bad.csv", content)
    with pytest.raises(InputError, match=match):
        CSVSource(str(path), **{"target": "y", **kwargs}).load()


def test_csv_drop_missing_drops_only_incomplete_rows(tmp_path):
    path = write(tmp_path / "d.csv", "a,b,y\n1,,3\n2,4,5\n3,6,7\n")
    table = CSVSource(str(path), target="y", drop_missing=True).load()
    np.testing.assert_array_equal(table.x, [[2, 4], [3, 6]])


REFERENCE = "a,b,y\n1.5,-2,10.25\n2.5,3e2,20\n"


@pytest.mark.parametrize(
    "content, kwargs, said",
    [
        ("a;b;y\n1,5;-2;10,25\n2,5;3e2;20\n", {}, "as ';'-separated with decimal commas"),
        ("a\tb\ty\n1.5\t-2\t10.25\n2.5\t3e2\t20\n", {}, "as '\\t'-separated"),
        ("a|b|y\n1.5|-2|10.25\n2.5|3e2|20\n", {}, "as '|'-separated"),
        (
            "# exported by a logger\n\n# units: SI\n" + REFERENCE,
            {},
            "skipping 3 comment or blank line(s) above the header",
        ),
        ('"rooms, total";b;y\n1,5;-2;10,25\n2,5;3e2;20\n', {}, "as ';'-separated with decimal commas"),
        ("a;b;y\n1.5;-2;10.25\n2.5;3e2;20\n", {"delimiter": ";"}, None),  # given, so nothing to say
        ("a\tb\ty\n1,5\t-2\t10,25\n2,5\t3e2\t20\n", {"delimiter": "\\t", "decimal": ","}, None),
        ("a;b;y\n1,5;-2;10,25\n2,5;3e2;20\n", {"decimal": ","}, "as ';'-separated"),
    ],
)
def test_csv_layout_is_detected_and_said(tmp_path, capsys, content, kwargs, said):
    table = CSVSource(str(write(tmp_path / "d.csv", content)), target="y", **kwargs).load()
    np.testing.assert_array_equal(table.x, [[1.5, -2], [2.5, 300]])
    np.testing.assert_array_equal(table.y, [[10.25], [20]])
    stderr = capsys.readouterr().err
    if said is None:
        assert stderr == ""
    else:
        assert stderr.strip() == f"read '{tmp_path / 'd.csv'}' {said}"


def test_plain_csv_is_read_silently_and_keeps_decimal_points(tmp_path, capsys):
    table = CSVSource(str(write(tmp_path / "d.csv", REFERENCE)), target="y").load()
    np.testing.assert_array_equal(table.x, [[1.5, -2], [2.5, 300]])
    assert capsys.readouterr().err == ""


def test_sniff_layout_prefers_the_separator_that_keeps_fields_numeric():
    from linreg_pl.data.csv import CSVLayout, sniff_layout

    # A comma inside a semicolon file's header splits as many fields as the semicolons do.
    assert sniff_layout("rooms, total;y\n1;2\n3;4\n").delimiter == ";"
    assert sniff_layout("a;b\n").delimiter == ";"  # header only
    assert sniff_layout('a,b\n"1,5",2\n', decimal=",") == CSVLayout(",", ",", 0)  # quoted decimal commas
    assert sniff_layout("a\n1\n2\n").delimiter == ","  # one column: nothing better than the default
    assert sniff_layout("a;b\n1.5;2,5\n").decimal == "."  # mixed marks: not a decimal-comma file


@pytest.mark.parametrize(
    "content, kwargs, match",
    [
        (
            "a b y\n1 2 3\n",
            {},
            r"column 'y' is not in .*\['a b y'\].* one column.*--data.source.delimiter",
        ),
        ("a b\n1 2\n", {"target": "a b"}, r"no feature column besides .*--data.source.delimiter"),
        (
            "a,b,y\n1,,3\n2,,4\n",
            {},
            r"feature column\(s\) \['b'\] .* no values .*--data.source.features '\[\"a\"\]'",
        ),
        ("a,b,y\n1,2,\n2,3,\n", {}, r"target column\(s\) \['y'\] .* have no values"),
        ("a,b,y\n1,,3\n,4,5\n", {"drop_missing": True}, r"every row .* missing value .*of 2 rows: 'a': 1, 'b': 1\)"),
        ("a,a,y\n1,2,3\n", {}, r"names column\(s\) \['a'\] more than once; give each column a unique name"),
        ("a,b,y\n1,2,3,4\n", {}, r"does not split into its header's columns at ',' .*--data.source.delimiter"),
        ("a,b,y\n1,2,3\n4,5,6,7\n", {}, r"does not split into its header's columns"),
        ("a;b;y\n", {}, "header but no data rows"),
        ("# only a comment\n", {}, "is empty"),
        ("a,b,y\n1,2,3\n", {"delimiter": "ab"}, r"delimiter='ab' must be one character"),
        ("a,b,y\n1,2,3\n", {"decimal": ";"}, r"decimal=';' must be '.' or ','"),
        ('a,b,y\n"1,5",2,3\n', {}, r"not numeric \(e.g. '1,5' on data row 1 \(a decimal comma\? .*decimal ','\)"),
        ("a,,y\n1,2,3\n", {}, r"column\(s\) \[2\] of .* hold values but have no name in the header"),
    ],
)
def test_csv_layout_errors_name_the_fix(tmp_path, content, kwargs, match):
    with pytest.raises(InputError, match=match):
        CSVSource(str(write(tmp_path / "d.csv", content)), **{"target": "y", **kwargs}).load()


def test_real_dotted_names_and_trailing_delimiters_are_read_as_written(tmp_path):
    # 'a.1' is a real name here, not pandas' renaming of a second 'a'; the empty last column of a
    # delimiter ending every line is no column at all.
    table = CSVSource(str(write(tmp_path / "d.csv", "a,a.1,y,\n1,2,3,\n4,5,6,\n")), target="y").load()
    assert table.feature_names == ["a", "a.1"]
    np.testing.assert_array_equal(table.x, [[1, 2], [4, 5]])


def test_quoted_decimal_commas_in_a_comma_file_with_the_decimal_given(tmp_path):
    table = CSVSource(str(write(tmp_path / "d.csv", 'a,y\n"1,5",2\n"2,5",3\n')), target="y", decimal=",").load()
    np.testing.assert_array_equal(table.x, [[1.5], [2.5]])


def rows_of(a_scale: float = 1.0, y_outlier: float | None = None, n: int = 40) -> str:
    """A comma-separated file of y = 2a - 3b + 1 + noise, with column a scaled and maybe one outlier in y."""
    rng = np.random.default_rng(0)
    x = rng.uniform(0, 10, size=(n, 2))
    y = x @ [2.0, -3.0] + 1.0 + rng.normal(scale=0.1, size=n)
    if y_outlier is not None:
        y[3] = y_outlier
    lines = ["a,b,y"] + [",".join(repr(float(v)) for v in (a * a_scale, b, t)) for a, b, t in zip(*x.T, y, strict=True)]
    return "\n".join(lines) + "\n"


CLI_CASES = {
    "feature-1e39": (rows_of(a_scale=1e39), [], r"\['a'\] hold values up to .*e\+39, too large for float32 .*64-true"),
    "target-outlier-3e19": (rows_of(y_outlier=3e19), [], r"\['y'\] hold values up to 3e\+19, too large for float32"),
    "1e300-under-64-true": (rows_of(a_scale=1e300), ["--trainer.precision", "64-true"], r"too large for float64"),
    "space-separated": ("a b y\n1 2 3\n4 5 6\n", [], r"one column.*--data.source.delimiter"),
    "all-empty-column": ("a,b,y\n1,,3\n2,,5\n3,,7\n", [], r"feature column\(s\) \['b'\] .* no values"),
    "repeated-name": ("a,a,y\n1,2,3\n2,3,5\n", [], r"names column\(s\) \['a'\] more than once"),
    "one-data-row": ("a,b,y\n1,2,3\n", [], r"has 1 row, too few"),
}


@pytest.mark.parametrize("content, args, match", CLI_CASES.values(), ids=CLI_CASES.keys())
def test_bad_csv_ends_in_one_line_exit_2_and_touches_no_file(tmp_path, content, args, match):
    from linreg_pl.cli import train
    from tests.helpers import assert_user_error, file_snapshot, run_in_process

    write(tmp_path / "data.csv", content)
    (tmp_path / "logs").mkdir()
    (tmp_path / "logs" / "keep.txt").write_text("earlier work")
    before = file_snapshot(tmp_path)
    result = run_in_process(
        train,
        "--data.source", "CSVSource", "--data.source.path", "data.csv", "--data.source.target", "y",
        "--trainer.enable_progress_bar", "false", *args, cwd=tmp_path,
    )  # fmt: skip
    assert_user_error(result, match)
    assert {path: data for path, data in file_snapshot(tmp_path).items() if path in before} == before


@pytest.mark.slow
def test_semicolon_file_with_decimal_commas_trains_and_says_how_it_was_read(tmp_path):
    from linreg_pl.cli import train
    from tests.helpers import run_in_process

    content = "# exported\n" + rows_of().replace(",", ";").replace(".", ",")
    write(tmp_path / "data.csv", content)
    result = run_in_process(
        train,
        "--data.source", "CSVSource", "--data.source.path", "data.csv", "--data.source.target", "y",
        "--trainer.enable_progress_bar", "false", "--trainer.max_epochs", "1", cwd=tmp_path,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-2000:]
    said = [line for line in result.stderr.splitlines() if line.startswith("read ")]
    how = "as ';'-separated with decimal commas skipping 1 comment or blank line(s) above the header"
    assert said == [f"read '{tmp_path / 'data.csv'}' {how}"]


@pytest.mark.slow
def test_64_true_trains_on_values_beyond_float32(tmp_path):
    from tests.helpers import CONFIGS, lstsq_with_intercept, train_in

    path = write(tmp_path / "data.csv", rows_of(a_scale=1e39))
    summary = train_in(
        tmp_path,
        "--config", str(CONFIGS / "csv.yaml"), "--data.source.path", "data.csv", "--data.source.target", "y",
        "--data.val_fraction", "0", "--data.test_fraction", "0", "--trainer.precision", "64-true",
    )  # fmt: skip
    table = CSVSource(str(path), target="y").load()
    scale = np.array([1e39, 1.0])  # numpy's lstsq needs columns of like scale: fit in scaled units, map back
    weight, bias = lstsq_with_intercept(table.x / scale, table.y)
    weight = weight / scale
    np.testing.assert_allclose(summary["learned"]["weight"], weight, rtol=1e-3)
    np.testing.assert_allclose(summary["learned"]["bias"], bias, rtol=1e-3)
