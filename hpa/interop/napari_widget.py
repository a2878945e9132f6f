"""The napari widget of the hpa-cells plugin: step through the images of a run.

*Plugins > Images of a run (HPA cells)* docks :class:`RunImages`: a folder field (a
PRED_DIR or SEG_DIR), a list of the run's image Ids (:func:`hpa.interop.napari.image_ids`),
*previous* and *next* buttons and a line saying where it stands (``3 of 12``, the pixel
size or that the layers are in pixels). Choosing an image replaces the run's layers by
that image's (:func:`hpa.interop.napari.show_image`); a run the reader opened already
(dropped on napari) is picked up from its layers. Built from magicgui widgets, which
napari installs with itself; this module is imported only when the widget is opened.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from magicgui.widgets import ComboBox, Container, FileEdit, Label, PushButton

from hpa.errors import HPAError
from hpa.interop.napari import hpa_metadata, image_ids, show_image


class RunImages(Container):
    """The dock widget: a run folder, its image Ids, previous / next (see the module docstring).

    Args:
        napari_viewer: the viewer whose layers it replaces (napari passes it by this name;
            a headless ``ViewerModel`` works too).
    """

    def __init__(self, napari_viewer: Any) -> None:
        self._viewer = napari_viewer
        self.folder = FileEdit(mode="d", label="run folder", tooltip="a PRED_DIR or SEG_DIR written by hpa")
        self.image = ComboBox(label="image", choices=[], tooltip="the image Ids of the run")
        self.previous = PushButton(text="previous")
        self.next = PushButton(text="next")
        self.status = Label(value="choose a PRED_DIR or SEG_DIR")
        buttons = Container(widgets=[self.previous, self.next], layout="horizontal", labels=False)
        super().__init__(widgets=[self.folder, self.image, buttons, self.status])
        self._run: Path | None = None
        self.folder.changed.connect(self._open_run)
        self.image.changed.connect(self._show)
        self.previous.changed.connect(lambda: self.step(-1))
        self.next.changed.connect(lambda: self.step(1))
        self._adopt()

    @property
    def ids(self) -> list[str]:
        """The image Ids of the open run (empty before one is chosen)."""
        return [str(c) for c in self.image.choices]

    def step(self, by: int) -> None:
        """Show the image ``by`` places after (or before) the current one, stopping at the ends."""
        ids = self.ids
        if ids and self.image.value in ids:
            self.image.value = ids[max(0, min(len(ids) - 1, ids.index(self.image.value) + by))]

    def _adopt(self) -> None:
        """Take up the run and image that the reader already opened in the viewer, if any."""
        for layer in self._viewer.layers:
            meta = hpa_metadata(layer)
            if meta.get("run"):
                self._open_run(Path(meta["run"]), shown=str(meta.get("image_id")))
                return

    def _open_run(self, folder: Path | None = None, shown: str | None = None) -> None:
        folder = Path(folder if folder is not None else self.folder.value)
        try:
            ids = image_ids(folder)
        except HPAError as exc:
            self.status.value = str(exc)
            return
        self._run = folder
        with self.folder.changed.blocked():
            self.folder.value = folder
        with self.image.changed.blocked():
            self.image.choices = ids
            self.image.value = shown if shown in ids else ids[0]
        if shown in ids:
            self._say()
        else:
            self._show()

    def _show(self, *_: object) -> None:
        if self._run is None or self.image.value is None:
            return
        try:
            show_image(self._viewer, self._run, str(self.image.value))
        except HPAError as exc:
            self.status.value = str(exc)
            return
        self._say()

    def _say(self) -> None:
        ids, current = self.ids, str(self.image.value)
        metas = [hpa_metadata(layer) for layer in self._viewer.layers]
        size = next((m.get("pixel_size") for m in metas if m.get("image_id") == current), None)
        scale = (
            f"pixel {size[1]:g} x {size[0]:g} {size[2]}" if size else "pixel units (no pixel size recorded)"
        )
        self.status.value = f"{ids.index(current) + 1} of {len(ids)}; {scale}"
