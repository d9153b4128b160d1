"""The job settings: output folder, mask source, model bundle (table with kind, size, provider, integrity),
mode, variants, steps, scheduler, guidance, seed, formats, resume. Reads and fills a JobSettings."""

from __future__ import annotations

from pathlib import Path

from PySide6.QtCore import Qt, Signal
from PySide6.QtWidgets import (
    QAbstractItemView,
    QCheckBox,
    QComboBox,
    QDoubleSpinBox,
    QFileDialog,
    QFormLayout,
    QGroupBox,
    QHBoxLayout,
    QHeaderView,
    QLabel,
    QLineEdit,
    QPushButton,
    QSpinBox,
    QTableView,
    QToolButton,
    QVBoxLayout,
    QWidget,
)

from desktop.settings import FORMATS, PROVIDERS, JobSettings
from desktop.viewmodels.bundles import PATH_ROLE, BundleListModel

MASK_SOURCE_TEXT = (
    ("user", "Drawn / mask file (user)"),
    ("box", "Box around each polyp"),
    ("random", "Random place on free mucosa"),
    ("retrieved", "Retrieved proposal"),
)
MODE_TEXT = (("add", "Add a polyp"), ("remove", "Remove the polyp"),
             ("transplant", "Transplant my polyps (move them to new places)"))
HARMONIZE_TEXT = (("model", "model (redrawn by the bundle)"), ("poisson", "Poisson blend"),
                  ("none", "none (copy-paste)"))
SCHEDULER_TEXT = (("", "Bundle default"), ("dpm++", "DPM-Solver++"), ("ddim", "DDIM"))
ATTRIBUTE_CHOICES = ("auto", "none")  # or words typed in: red,lobulated
ATTRIBUTES_TOOLTIP = (
    "What a model trained with attributes is asked for each new polyp (mode add):\n"
    "auto — drawn per variant from the input's own polyps (20 or more), else from Kvasir-SEG;\n"
    "none — nothing asked; or words, e.g. red,lobulated:\n"
    "  colour: pale, pink, red, whitish; surface: smooth, lobulated, irregular; elevation: flat, raised.\n"
    "Size and outline come from each mask. A model trained without attributes is asked nothing with auto, "
    "and refuses words."
)
ATTRIBUTE_GUIDANCE_TOOLTIP = (
    "How hard a model trained with attributes is pushed towards the asked attributes, apart from Guidance\n"
    "(which stays on the polyp itself). \"as guidance\": as hard as the polyp. Higher (e.g. 5) makes the asked\n"
    "colour and surface more frequent; the noisiest half of the steps then runs the model three times instead of\n"
    "two (about 1.25x the time).\n"
    "A model trained without attributes refuses it."
)


class SettingsPanel(QWidget):
    changed = Signal()
    addBundleRequested = Signal()

    def __init__(self, bundles: BundleListModel, parent: QWidget | None = None):
        super().__init__(parent)
        self.bundles = bundles
        self._selected_model = ""

        # output
        self.output = QLineEdit()
        self.output.setPlaceholderText("folder for the generated dataset")
        browse = QToolButton()
        browse.setText("…")
        browse.setToolTip("Choose the output folder")
        browse.clicked.connect(self._browse_output)
        output_row = QHBoxLayout()
        output_row.addWidget(self.output, 1)
        output_row.addWidget(browse)
        self.resume = QCheckBox("Continue the job in the output folder")
        self.resume.setToolTip("On: a rerun continues (and keeps) what an earlier run with the same settings wrote.\n"
                               "Off: start over — the output folder's generated files are deleted first.")

        # bundle table
        self.bundle_view = QTableView()
        self.bundle_view.setModel(bundles)
        self.bundle_view.setSelectionBehavior(QAbstractItemView.SelectionBehavior.SelectRows)
        self.bundle_view.setSelectionMode(QAbstractItemView.SelectionMode.SingleSelection)
        self.bundle_view.verticalHeader().hide()
        self.bundle_view.setWordWrap(False)
        self.bundle_view.setTextElideMode(Qt.TextElideMode.ElideMiddle)
        self.bundle_view.setEditTriggers(QAbstractItemView.EditTrigger.NoEditTriggers)
        header = self.bundle_view.horizontalHeader()
        header.setSectionResizeMode(QHeaderView.ResizeMode.ResizeToContents)
        header.setSectionResizeMode(0, QHeaderView.ResizeMode.Stretch)
        self.bundle_view.setMinimumHeight(90)
        self.bundle_view.setMaximumHeight(130)
        self.bundle_view.selectionModel().selectionChanged.connect(self._bundle_selected)
        bundles.modelReset.connect(self._reselect_bundle)
        bundles.rowsInserted.connect(lambda *_: self._reselect_bundle())
        add_bundle = QPushButton("Add bundle…")
        add_bundle.setToolTip("Add a model bundle folder (one holding bundle.json) to the list")
        add_bundle.clicked.connect(self.addBundleRequested)
        self.provider = QComboBox()
        for name in PROVIDERS:
            self.provider.addItem(name.upper() if name != "auto" else "auto: GPU if it loads, else CPU", name)
        self.provider.setSizeAdjustPolicy(QComboBox.SizeAdjustPolicy.AdjustToMinimumContentsLengthWithIcon)
        self.provider.setMinimumContentsLength(8)
        bundle_row = QHBoxLayout()
        bundle_row.addWidget(QLabel("Provider"))
        bundle_row.addWidget(self.provider, 1)
        bundle_row.addWidget(add_bundle)

        # generation
        self.mask_source = QComboBox()
        for value, text in MASK_SOURCE_TEXT:
            self.mask_source.addItem(text, value)
        self.box_pad = QSpinBox()
        self.box_pad.setRange(0, 500)
        self.box_pad.setSuffix(" px")
        self.mode = QComboBox()
        for value, text in MODE_TEXT:
            self.mode.addItem(text, value)
        self.harmonize = QComboBox()
        for value, text in HARMONIZE_TEXT:
            self.harmonize.addItem(text, value)
        self.harmonize.setToolTip("How a moved polyp joins its new place: the model re-noises the paste and a band "
                                  "around it and denoises it; Poisson keeps its texture and takes the seam's colour "
                                  "from the frame; none is a plain paste with a soft margin")
        self.strength = QDoubleSpinBox()
        self.strength.setRange(0.05, 1.0)
        self.strength.setSingleStep(0.05)
        self.strength.setDecimals(2)
        self.strength.setToolTip("How far the model re-noises the paste: low keeps the donor, high redraws it")
        self.variants = QSpinBox()
        self.variants.setRange(1, 100)
        self.steps = QSpinBox()
        self.steps.setRange(0, 200)
        self.steps.setSpecialValueText("bundle default")
        self.scheduler = QComboBox()
        for value, text in SCHEDULER_TEXT:
            self.scheduler.addItem(text, value)
        self.guidance = QDoubleSpinBox()
        self.guidance.setRange(-0.5, 50.0)
        self.guidance.setSingleStep(0.5)
        self.guidance.setDecimals(1)
        self.guidance.setSpecialValueText("bundle default")
        self.attribute_guidance = QDoubleSpinBox()
        self.attribute_guidance.setRange(-0.5, 50.0)
        self.attribute_guidance.setSingleStep(0.5)
        self.attribute_guidance.setDecimals(1)
        self.attribute_guidance.setSpecialValueText("as guidance")
        self.attribute_guidance.setToolTip(ATTRIBUTE_GUIDANCE_TOOLTIP)
        self.attribute_guidance_until = QDoubleSpinBox()
        self.attribute_guidance_until.setRange(0.0, 1.0)
        self.attribute_guidance_until.setSingleStep(0.05)
        self.attribute_guidance_until.setDecimals(2)
        self.attribute_guidance_until.setSpecialValueText("model default")  # 0: no share of its own
        self.attribute_guidance_until.setToolTip(
            "On which share of the steps, the noisiest first, the asked attributes get their own guidance (then\n"
            "one guided pair a step). \"model default\": the model's own share (0.5 for the compact models).")
        self.guidance_interval = QLineEdit()
        self.guidance_interval.setPlaceholderText("every step (e.g. 0.2-0.8)")
        self.guidance_interval.setToolTip(
            "Guide only on this share of the sampling steps, A-B (0 = the noisiest), the model's plain prediction\n"
            "on the others: fewer U-Net calls a step outside it. Empty: every step. Compact models only.")
        self.seed = QSpinBox()
        self.seed.setRange(0, 2**31 - 1)
        self.inpaint_area = QComboBox()
        for value, text in (("", "bundle default"), ("frame", "whole frame"), ("region", "region around the mask")):
            self.inpaint_area.addItem(text, value)
        self.inpaint_area.setToolTip("What the model sees: the whole frame resized, or the region around the mask "
                                     "(more detail for small polyps; the compact model's default)")
        self.region_padding = QSpinBox()
        self.region_padding.setRange(-1, 2000)
        self.region_padding.setSuffix(" px")
        self.region_padding.setSpecialValueText("automatic")
        self.region_padding.setToolTip("Context around the mask's box in region mode (automatic: 30 % of its longer side)")
        self.working_size = QSpinBox()
        self.working_size.setRange(0, 2048)
        self.working_size.setSingleStep(16)
        self.working_size.setSuffix(" px")
        self.working_size.setSpecialValueText("the model's")
        self.working_size.setToolTip("The model works at about this many pixels squared of its view (the model's: 64 "
                                     "for the compact model). 96 paints large polyps with more detail, about 2× slower")
        self.prompt = QLineEdit()
        self.prompt.setPlaceholderText("bundle default (Polyp / Normal)")
        self.prompt.setToolTip("Text prompt; for a CCIS-Diff (sd-controlnet) bundle a clinical description")
        self.captions = QLineEdit()
        self.captions.setPlaceholderText("none (sd-controlnet: CSV/JSONL frame → text)")
        self.captions.setToolTip("Per-frame prompts for an sd-controlnet bundle: CSV (frame,text) or JSONL, e.g. "
                                 "written by `main.py caption`; the Editor shows and edits the open frame's caption")
        self.attributes = QComboBox()
        self.attributes.setEditable(True)
        for value in ATTRIBUTE_CHOICES:
            self.attributes.addItem(value)
        self.attributes.setToolTip(ATTRIBUTES_TOOLTIP)
        self.formats = {name: QCheckBox(name) for name in FORMATS}
        formats_row = QHBoxLayout()
        for box in self.formats.values():
            formats_row.addWidget(box)
        formats_row.addStretch(1)

        # the polyp judge
        self.use_judge = QCheckBox("Use a judge of my own instead (every mode)")
        self.use_judge.setToolTip("After each variant is made, a polyp segmenter (main.py train-judge) looks at the "
                                  "region: in add mode it must find a polyp there, in remove mode none. A rejected "
                                  "variant goes to rejected/, stays out of images, labels, COCO and YOLO, and the "
                                  "manifest says why; the gallery shows every variant's score.")
        self.model_judge = QCheckBox("Keep only variants the model's recommended judge finds")
        self.model_judge.setToolTip("The default model recommends the polyp judge for add mode (up to 4 attempts per "
                                    "variant): on the Kvasir-SEG learning curve its judge-kept variants taught a "
                                    "segmenter more than unchecked ones. Used when no judge of your own is chosen "
                                    "below; a model that recommends none is not checked.")
        self.mucosa_check = QCheckBox("Paint a removal again when its fill is darker than the mucosa around it")
        self.mucosa_check.setToolTip("Remove mode: a fill more than 15 luma levels darker than the ring of mucosa "
                                     "around it (a dark smudge) is painted again with the next seed, up to 4 times "
                                     "(or the attempts below with a judge of your own), then goes to rejected/.")
        self.judge = QLineEdit()
        self.judge.setPlaceholderText("polyp-judge (a segmenter bundle: name or folder)")
        judge_browse = QToolButton()
        judge_browse.setText("…")
        judge_browse.setToolTip("Choose a judge bundle folder (one holding bundle.json, kind segmenter)")
        judge_browse.clicked.connect(self._browse_judge)
        judge_row = QHBoxLayout()
        judge_row.addWidget(self.judge, 1)
        judge_row.addWidget(judge_browse)
        self.min_judge_score = QDoubleSpinBox()
        self.min_judge_score.setRange(0.0, 1.0)
        self.min_judge_score.setSingleStep(0.05)
        self.min_judge_score.setDecimals(2)
        self.min_judge_score.setToolTip("The judge score a variant needs to be kept (0–1)")
        self.max_attempts = QSpinBox()
        self.max_attempts.setRange(1, 20)
        self.max_attempts.setToolTip("Generations per variant: a rejected one is made again with the next seed, "
                                     "up to this many times")
        judge_box = QGroupBox("Polyp judge")
        judge_form = QFormLayout(judge_box)
        judge_form.addRow(self.model_judge)
        judge_form.addRow(self.mucosa_check)
        judge_form.addRow(self.use_judge)
        judge_form.addRow("Judge bundle", judge_row)
        judge_form.addRow("Minimum score", self.min_judge_score)
        judge_form.addRow("Attempts per variant", self.max_attempts)

        output_box = QGroupBox("Output")
        output_form = QFormLayout(output_box)
        output_form.addRow("Folder", output_row)
        output_form.addRow("", self.resume)
        output_form.addRow("Formats", formats_row)

        model_box = QGroupBox("Model bundle")
        model_layout = QVBoxLayout(model_box)
        model_layout.addWidget(self.bundle_view)
        model_layout.addLayout(bundle_row)

        job_box = QGroupBox("Generation")
        form = QFormLayout(job_box)
        form.addRow("Mode", self.mode)
        form.addRow("Mask source", self.mask_source)
        form.addRow("Blending", self.harmonize)
        form.addRow("Strength", self.strength)
        form.addRow("Box padding", self.box_pad)
        form.addRow("Variants per frame", self.variants)
        form.addRow("Steps", self.steps)
        form.addRow("Scheduler", self.scheduler)
        form.addRow("Guidance", self.guidance)
        form.addRow("Seed", self.seed)
        form.addRow("Model sees", self.inpaint_area)
        form.addRow("Region padding", self.region_padding)
        form.addRow("Working size", self.working_size)
        form.addRow("Prompt", self.prompt)
        form.addRow("Captions file", self.captions)
        form.addRow("Attributes", self.attributes)
        form.addRow("Attribute guidance", self.attribute_guidance)
        form.addRow("… on the first share", self.attribute_guidance_until)
        form.addRow("Guidance interval", self.guidance_interval)

        layout = QVBoxLayout(self)
        layout.addWidget(job_box)
        layout.addWidget(judge_box)
        layout.addWidget(model_box)
        layout.addWidget(output_box)
        layout.addStretch(1)

        self._random_before_mode = False  # mask source random, set aside while the mode is remove or transplant
        self.mode.currentIndexChanged.connect(self._mode_changed)  # first: the mask source follows the mode
        for widget in (self.mask_source, self.mode, self.harmonize, self.scheduler, self.provider, self.inpaint_area):
            widget.currentIndexChanged.connect(self._changed)
        for widget in (self.box_pad, self.variants, self.steps, self.seed, self.guidance, self.attribute_guidance,
                       self.region_padding, self.attribute_guidance_until,
                       self.working_size, self.min_judge_score, self.max_attempts, self.strength):
            widget.valueChanged.connect(self._changed)
        for box in (self.resume, self.use_judge, self.model_judge, self.mucosa_check, *self.formats.values()):
            box.toggled.connect(self._changed)
        self.judge.editingFinished.connect(self._changed)
        self.output.editingFinished.connect(self._changed)
        self.prompt.editingFinished.connect(self._changed)
        self.captions.editingFinished.connect(self._changed)
        self.guidance_interval.editingFinished.connect(self._changed)
        self.attributes.currentIndexChanged.connect(self._changed)
        self.attributes.lineEdit().editingFinished.connect(self._changed)

    # ------------------------------------------------------------------ JobSettings
    def set_settings(self, s: JobSettings) -> None:
        blockers = [w.blockSignals(True) for w in self._inputs()]
        self._random_before_mode = False
        try:
            _select(self.mask_source, s.mask_source)
            _select(self.mode, s.mode)
            _select(self.harmonize, s.harmonize)
            self.strength.setValue(s.strength)
            _select(self.scheduler, s.scheduler)
            _select(self.provider, s.provider)
            self.box_pad.setValue(s.box_pad)
            self.variants.setValue(s.variants)
            self.steps.setValue(s.steps or 0)
            self.guidance.setValue(-0.5 if s.guidance is None else s.guidance)
            self.seed.setValue(s.seed)
            _select(self.inpaint_area, s.inpaint_area)
            self.region_padding.setValue(-1 if s.region_padding is None else s.region_padding)
            self.working_size.setValue(0 if s.working_size is None else s.working_size)
            self.prompt.setText(s.prompt)
            self.captions.setText(s.captions)
            self.attributes.setCurrentText(s.attributes)
            self.attribute_guidance.setValue(-0.5 if s.attribute_guidance is None else s.attribute_guidance)
            self.attribute_guidance_until.setValue(s.attribute_guidance_until or 0.0)
            self.guidance_interval.setText(s.guidance_interval)
            self.output.setText(s.output)
            self.resume.setChecked(s.resume)
            self.use_judge.setChecked(s.use_judge)
            self.model_judge.setChecked(s.model_judge)
            self.mucosa_check.setChecked(s.mucosa_check)
            self.judge.setText(s.judge)
            self.min_judge_score.setValue(s.min_judge_score)
            self.max_attempts.setValue(s.max_attempts)
            for name, box in self.formats.items():
                box.setChecked(name in s.formats)
            self._selected_model = s.model
        finally:
            for widget, was in zip(self._inputs(), blockers):
                widget.blockSignals(was)
        self._update_enabled()
        self._reselect_bundle()

    def settings(self) -> JobSettings:
        return JobSettings(
            output=self.output.text().strip(),
            model=self.selected_bundle(),
            provider=self.provider.currentData(),
            mask_source=self.mask_source.currentData(),
            box_pad=self.box_pad.value(),
            mode=self.mode.currentData(),
            harmonize=self.harmonize.currentData(),
            strength=self.strength.value(),
            variants=self.variants.value(),
            seed=self.seed.value(),
            steps=self.steps.value() or None,
            scheduler=self.scheduler.currentData(),
            guidance=None if self.guidance.value() < 0 else self.guidance.value(),
            formats=[name for name, box in self.formats.items() if box.isChecked()],
            resume=self.resume.isChecked(),
            prompt=self.prompt.text(),
            captions=self.captions.text(),
            attributes=self.attributes.currentText().strip() or "auto",
            attribute_guidance=None if self.attribute_guidance.value() < 0 else self.attribute_guidance.value(),
            attribute_guidance_until=self.attribute_guidance_until.value() or None,
            guidance_interval=self.guidance_interval.text().strip(),
            inpaint_area=self.inpaint_area.currentData(),
            region_padding=None if self.region_padding.value() < 0 else self.region_padding.value(),
            working_size=self.working_size.value() or None,
            use_judge=self.use_judge.isChecked(),
            model_judge=self.model_judge.isChecked(),
            mucosa_check=self.mucosa_check.isChecked(),
            judge=self.judge.text().strip(),
            min_judge_score=self.min_judge_score.value(),
            max_attempts=self.max_attempts.value(),
        )

    def selected_bundle(self) -> str:
        rows = self.bundle_view.selectionModel().selectedRows()
        if rows:
            return rows[0].data(PATH_ROLE)
        return self._selected_model

    def select_bundle(self, path: str) -> None:
        self._selected_model = str(path)
        self._reselect_bundle()

    def _reselect_bundle(self) -> None:
        row = self.bundles.row_for(self._selected_model) if self._selected_model else -1
        if row < 0 and self.bundles.rows:
            row = 0  # the remembered bundle is gone (or not an inpainting one): the default, listed first
        if row >= 0:
            self.bundle_view.selectRow(row)

    def _bundle_selected(self) -> None:
        rows = self.bundle_view.selectionModel().selectedRows()
        if rows:
            self._selected_model = rows[0].data(PATH_ROLE)
            self._changed()

    def _inputs(self):
        return [self.mask_source, self.mode, self.harmonize, self.strength, self.scheduler, self.provider, self.box_pad, self.variants, self.steps,
                self.guidance, self.seed, self.inpaint_area, self.region_padding, self.working_size, self.prompt,
                self.captions,
                self.attributes, self.attribute_guidance, self.attribute_guidance_until, self.guidance_interval,
                self.output, self.resume, self.model_judge, self.mucosa_check, self.use_judge, self.judge, self.min_judge_score, self.max_attempts,
                *self.formats.values()]

    def _browse_output(self) -> None:
        start = self.output.text() or str(Path.home())
        folder = QFileDialog.getExistingDirectory(self, "Output folder for the dataset", start)
        if folder:
            self.output.setText(folder)
            self._changed()

    def _browse_judge(self) -> None:
        folder = QFileDialog.getExistingDirectory(self, "Judge bundle (a segmenter bundle folder)",
                                                  self.judge.text() or str(Path.home()))
        if folder:
            self.judge.setText(folder)
            self._changed()

    def _update_enabled(self) -> None:
        for widget in (self.judge, self.min_judge_score, self.max_attempts):
            widget.setEnabled(self.use_judge.isChecked())
        self.model_judge.setEnabled(not self.use_judge.isChecked())  # a judge of one's own replaces it
        self.box_pad.setEnabled(self.mask_source.currentData() == "box")
        transplanting = self.mode.currentData() == "transplant"
        self.harmonize.setEnabled(transplanting)
        self.strength.setEnabled(transplanting and self.harmonize.currentData() == "model")
        self.region_padding.setEnabled(self.inpaint_area.currentData() != "frame")
        self.attributes.setEnabled(self.mode.currentData() == "add")
        self.attribute_guidance.setEnabled(self.mode.currentData() == "add")
        self.attribute_guidance_until.setEnabled(self.mode.currentData() == "add"
                                                 and self.attribute_guidance.value() >= 0)
        self.guidance_interval.setEnabled(self.mode.currentData() != "transplant")
        self.mucosa_check.setEnabled(self.mode.currentData() == "remove")

    def _mode_changed(self, *args) -> None:
        """Random masks place new polyps: a removal or a transplant works at the frames' own masks, so choosing one
        of those modes switches mask source random to the drawn / file masks, and choosing add again brings it back."""
        mode = self.mode.currentData()
        if mode != "add" and self.mask_source.currentData() == "random":
            self._random_before_mode = True
            _select(self.mask_source, "user")
        elif mode == "add" and self._random_before_mode:
            self._random_before_mode = False
            if self.mask_source.currentData() == "user":
                _select(self.mask_source, "random")

    def _changed(self, *args) -> None:
        self._update_enabled()
        self.changed.emit()


def _select(combo: QComboBox, value) -> None:
    index = combo.findData(value)
    if index >= 0:
        combo.setCurrentIndex(index)
