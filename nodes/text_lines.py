"""Text reports that show as separate lines wherever ComfyUI displays a node's text.

A report reaches the user through a "Preview as Text" node (``PreviewAny``) fed by the node's STRING output. ComfyUI
0.3.75's frontend (1.32) renders that text as Markdown, where single line breaks join the lines into one paragraph;
0.33's (1.49) shows plain text by default and Markdown on a toggle. A Markdown list is one line per item in both
renderings and still reads as a list in plain text, so every report line is written as ``- line``
(tests/browser/test_text_reports.py checks it in the real editor).
"""

from collections.abc import Iterable


def report_text(lines: Iterable[str]) -> str:
    """The lines as one text, each a Markdown list item (empty lines dropped)."""
    return "\n".join(f"- {line.strip()}" for line in lines if line.strip())
