"""Modal dialogs: a small validated form, and the confirmation every action passes through."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from textual import on
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, Vertical
from textual.screen import ModalScreen
from textual.widgets import Button, Input, Label, Select, Static


@dataclass(frozen=True)
class Field:
    """One form input. `parse` turns the text into the value or raises ValueError(message)."""

    name: str
    label: str
    default: str = ""
    options: tuple[tuple[str, str], ...] = ()  # (label, value); non-empty -> a Select
    placeholder: str = ""
    parse: Callable[[str], Any] = str
    complement_of: str | None = None  # this field follows 1 - <that field> while untouched


FormCheck = Callable[[dict[str, Any]], str | None]


class FormScreen(ModalScreen[dict[str, Any] | None]):
    """Collects `fields`; dismisses with the parsed values, or None when cancelled."""

    BINDINGS = [Binding("escape", "cancel", "Cancel")]

    def __init__(self, title: str, fields: list[Field], check: FormCheck | None = None) -> None:
        super().__init__(classes="dialog-screen")
        self.title_text = title
        self.fields = fields
        self.check = check
        self._touched: set[str] = set()
        self._ready = False

    def compose(self) -> ComposeResult:
        with Vertical(classes="dialog"):
            yield Label(self.title_text, classes="dialog-title")
            for f in self.fields:
                yield Label(f.label, classes="field-label")
                if f.options:
                    values = [v for _, v in f.options]
                    yield Select(list(f.options), value=f.default if f.default in values else values[0],
                                 allow_blank=False, id=f"field-{f.name}", compact=True)
                else:
                    yield Input(value=f.default, placeholder=f.placeholder, id=f"field-{f.name}",
                                compact=True)
            yield Static(id="form-error", classes="form-error")
            with Horizontal(classes="dialog-buttons"):
                yield Button("OK", variant="primary", id="ok", compact=True)
                yield Button("Cancel", id="cancel", compact=True)
            yield Static("enter: OK · tab: next field · esc: cancel", classes="dialog-hint")

    def _widget(self, f: Field) -> Input | Select[str]:
        return self.query_one(f"#field-{f.name}")  # type: ignore[return-value]

    def values(self) -> dict[str, Any]:
        """Parsed values; ValueError naming the field when one is invalid."""
        out: dict[str, Any] = {}
        for f in self.fields:
            raw = self._widget(f).value
            text = "" if raw is Select.NULL else str(raw).strip()
            try:
                out[f.name] = f.parse(text)
            except ValueError as exc:
                raise ValueError(f"{f.label.rstrip(':')}: {exc}") from None
        if self.check is not None:
            problem = self.check(out)
            if problem:
                raise ValueError(problem)
        return out

    @on(Input.Changed)
    def _follow(self, event: Input.Changed) -> None:
        name = (event.input.id or "").removeprefix("field-")
        if event.input.has_focus:
            self._touched.add(name)
        for f in self.fields:
            if f.complement_of == name and f.name not in self._touched:
                try:
                    value = next(x for x in self.fields if x.name == name).parse(event.value.strip())
                except ValueError:
                    continue
                other = self._widget(f)
                if isinstance(other, Input):
                    other.value = f"{round(1 - float(value), 6):g}"
        self.query_one("#form-error", Static).update("")

    def on_mount(self) -> None:
        # Selects announce their initial value while mounting; only later changes are the user's.
        self.call_after_refresh(self._listen)

    def _listen(self) -> None:
        self._ready = True

    @on(Select.Changed)
    def _picked(self, event: Select.Changed) -> None:
        if self._ready:  # the user chose: once the list has closed, on to the next field (or OK)
            self.call_after_refresh(self._next_after, event.select)

    def _next_after(self, select: Select[str]) -> None:
        if self.focused is select:
            self.focus_next()

    @on(Input.Submitted)
    @on(Button.Pressed, "#ok")
    def submit(self) -> None:
        try:
            values = self.values()
        except ValueError as exc:
            self.query_one("#form-error", Static).update(str(exc))
            return
        self.dismiss(values)

    @on(Button.Pressed, "#cancel")
    def action_cancel(self) -> None:
        self.dismiss(None)


class ConfirmScreen(ModalScreen[bool]):
    """'Do this?' — y/enter confirms, n/esc cancels. Nothing is sent before a yes."""

    BINDINGS = [Binding("y", "confirm", "Confirm"), Binding("n,escape", "cancel", "Cancel")]

    def __init__(self, title: str, question: str) -> None:
        super().__init__(classes="dialog-screen")
        self.title_text = title
        self.question = question

    def compose(self) -> ComposeResult:
        with Vertical(classes="dialog"):
            yield Label(self.title_text, classes="dialog-title")
            yield Static(self.question, classes="dialog-question")
            with Horizontal(classes="dialog-buttons"):
                yield Button("Confirm", variant="warning", id="confirm", compact=True)
                yield Button("Cancel", id="cancel", compact=True)
            yield Static("y/enter: confirm · n/esc: cancel", classes="dialog-hint")

    def on_mount(self) -> None:
        self.query_one("#confirm", Button).focus()

    @on(Button.Pressed, "#confirm")
    def action_confirm(self) -> None:
        self.dismiss(True)

    @on(Button.Pressed, "#cancel")
    def action_cancel(self) -> None:
        self.dismiss(False)
