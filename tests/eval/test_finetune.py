"""The eval pieces `rag finetune generator` uses: questions written only from the documents of one split."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

from eval.datasets import load_generic
from eval.finetune import make_synthesizer, write_pairs_testset
from rag.generation import GenerationOptions, Message, TokenStream
from tests.rag.test_answering import ScriptedGenerator


class PassageReader(ScriptedGenerator):
    """Writes a question and an answer from the passage it is shown, in the test-set generator's format."""

    def _stream(self, messages: Sequence[Message], options: GenerationOptions, stream: TokenStream) -> Iterator[str]:
        passage = messages[-1].content.split("Passage:", 1)[1].split("\n\n")[0].split()
        self.replies = [
            f"Question: Which detail comes after '{' '.join(passage[6:9])}'?\nAnswer: {' '.join(passage[:5])}"
        ]
        yield from super()._stream(messages, options, stream)


def test_questions_come_only_from_the_given_documents(samples_index: Any, tmp_path: Path) -> None:
    _, store = samples_index
    documents = sorted({p["document_id"] for _, p in store.scroll("documents", fields=["document_id"])})
    handbook = [d for d in documents if d.endswith("employee-handbook.md")]
    logged: list[str] = []
    synthesize = make_synthesizer(store, "documents", PassageReader(), log=logged.append)
    pairs = synthesize(handbook, 3, 0)
    assert pairs and all(p.chunk.document_id == handbook[0] for p in pairs)
    assert all(p.answer.split()[0] in p.chunk.text for p in pairs)
    assert any("questions kept" in line for line in logged)
    # The test documents' questions become a simple-format eval set with the chunk's document as gold.
    examples = load_generic(write_pairs_testset(pairs, tmp_path / "testset.jsonl"))
    assert [e.question for e in examples] == [p.question for p in pairs]
    assert all(e.gold_document_ids == (handbook[0],) for e in examples)
