"""The answer checker: numbers, names and words of each sentence must come from the chunks it cites."""

from rag.support import check_answer, quantities, unsupported_names, unsupported_numbers

HANDBOOK = "Full-time employees receive 28 days of paid leave per year, including public holidays."
FINANCE = "Revenue for fiscal 2022 was $1,577 million, up 12.5% from 2021. The company is led by Jane Doe."


def test_number_forms_normalise() -> None:
    values = {q.text: q.scaled for q in quantities("twenty-eight days, $1,577 million, 1.6 billion, 12%")}
    assert values["twenty-eight"] == 28
    assert values["$1,577 million"] == 1.577e9
    assert values["1.6 billion"] == 1.6e9


def test_numbers_must_appear_in_a_source() -> None:
    assert unsupported_numbers("Employees get 9 days of paid leave.", [HANDBOOK]) == ["9"]
    assert unsupported_numbers("Employees get 28 days of paid leave.", [HANDBOOK]) == []
    assert unsupported_numbers("Employees get twenty-eight days.", [HANDBOOK]) == []
    assert unsupported_numbers("Revenue was 1.6 billion dollars.", [FINANCE]) == []  # 1,577 million rounded
    assert unsupported_numbers("Revenue was $1,577 million.", ["Revenue (in millions) | 1,577"]) == []
    assert unsupported_numbers("Revenue grew 13%.", [FINANCE]) == ["13%"]
    assert unsupported_numbers("Revenue grew 12.5%.", [FINANCE]) == []


def test_names_must_appear_in_a_source() -> None:
    assert unsupported_names("The company is led by John Smith.", [FINANCE]) == ["John", "Smith"]
    assert unsupported_names("The company is led by Jane Doe.", [FINANCE]) == []


def test_the_nine_days_answer_is_flagged_with_its_reason() -> None:
    checks = check_answer("Employees get 9 days of paid leave [1].", {1: HANDBOOK})
    assert len(checks) == 1 and not checks[0].supported
    assert checks[0].missing_numbers == ("9",)
    assert "9 is in no source" in (checks[0].reason or "")
    good = check_answer("Employees receive 28 days of paid leave per year [1].", {1: HANDBOOK})
    assert good[0].supported and good[0].source == 1 and good[0].span is not None


def test_wrong_citation_and_uncited_sentences() -> None:
    sources = {1: HANDBOOK, 2: FINANCE}
    wrong = check_answer("Revenue for fiscal 2022 was $1,577 million [1].", sources)
    assert not wrong[0].supported and wrong[0].wrong_citations == (1,)
    uncited = check_answer("Revenue for fiscal 2022 was $1,577 million.", sources)
    assert uncited[0].supported and uncited[0].source == 2


def test_a_sentence_that_is_only_a_citation_is_not_checked() -> None:
    assert check_answer("[1]", {1: HANDBOOK}) == ()
    assert check_answer("", {1: HANDBOOK}) == ()


def test_a_negation_the_source_does_not_make_is_flagged() -> None:
    # The word overlap sees one extra word ("not") and the embedding barely moves: only the polarity check flags it.
    checks = check_answer("Employees do not receive 28 days of paid leave [1].", {1: HANDBOOK})
    assert not checks[0].supported and "negates what the source states" in (checks[0].reason or "")
    cat = "British Blues are not a distinct breed , but rather a British Shorthair with a blue coat ."
    dropped = check_answer("British Blues are a distinct breed [1].", {1: cat})
    assert not dropped[0].supported and "the source negates it" in (dropped[0].reason or "")
    kept = check_answer("British Blues aren't a distinct breed [1].", {1: cat})
    assert kept[0].supported, kept[0].reason


def test_a_negation_of_another_clause_is_not_a_flip() -> None:
    act = "The Act was not passed to raise revenue , but rather to regulate trade with the West Indies ."
    checks = check_answer("The Act was passed to regulate trade with the West Indies [1].", {1: act})
    assert checks[0].supported, checks[0].reason


def test_a_list_number_alone_claims_nothing() -> None:
    checks = check_answer("The leave is:\n1.\nEmployees get 9 days of paid leave [1].", {1: HANDBOOK})
    assert [c.text for c in checks] == ["The leave is:", "1.", "Employees get 9 days of paid leave [1]."]
    assert checks[1].supported and checks[1].reason is None
    assert not checks[2].supported


def test_a_name_that_opens_the_sentence_is_checked() -> None:
    band = "Bill and Pam later leave the band , and Hamilton joins it in 1999 ."
    assert unsupported_names("Wilhelm and Pam later leave the band.", [band]) == ["Wilhelm"]
    assert unsupported_names("Bill and Pam later leave the band.", [band]) == []
    # Words that open any sentence are not names, even when no source has them.
    assert unsupported_names("Generally, Bill leaves the band.", [band]) == []
    assert unsupported_names("Overall, Hamilton joins the band.", [band]) == []


def test_possessives_and_hyphens_match_tokenised_sources() -> None:
    # Tokenised text (ClapNQ, PTB style) writes "Jay - Z 's": the answer's "Jay-Z's" is the same name.
    source = "Magna Carta is Jay - Z 's third album ; Funimation's dub followed ."
    assert unsupported_names("It is Jay-Z's third album, and Funimation dubbed it.", [source]) == []
    assert unsupported_names("It is Jay-Q's third album.", [source]) == ["Jay-Q's"]


def test_accents_and_hyphenated_source_words_match() -> None:
    source = "Khloé Kardashian says both terms are of Pre-Greek origin ."
    assert unsupported_names("It features Khloe's sisters.", [source]) == []
    assert unsupported_names("Both terms are of Greek origin, Khloé says.", [source]) == []


def test_a_question_or_lead_in_needs_no_source_sentence_but_its_names_do() -> None:
    checks = check_answer("What do employees get?\nThe answer is:\nEmployees get 28 days [1].", {1: HANDBOOK})
    assert [c.supported for c in checks] == [True, True, True]
    invented = check_answer("What did John Smith get?", {1: HANDBOOK})
    assert not invented[0].supported and invented[0].missing_names == ("John", "Smith")
    claim = check_answer("Employees get a company car.", {1: HANDBOOK})
    assert not claim[0].supported


def test_a_link_no_source_contains_is_unsupported() -> None:
    source = "Expenses are filed through the portal at https://expenses.example.com within 30 days."
    good = check_answer("File expenses at https://expenses.example.com within 30 days [1].", {1: source})
    assert good[0].supported
    bad = check_answer("File expenses at https://evil.example.net/?q=secret within 30 days [1].", {1: source})
    assert not bad[0].supported and "https://evil.example.net/?q=secret is in no source" in (bad[0].reason or "")
