// The Model view: the knobs of a lab model on the left (a preset, layers, width, experts, top-k,
// fine-grained factor, shared experts, dense layers, router) and four charts on the right that
// follow them live: total vs active parameters by component, the lab model beside real MoE
// models (log scale), memory vs compute per token, and a drawing of one transformer block.
#pragma once

#include <QHash>
#include <QList>
#include <QVector>
#include <QWidget>
#include <memory>

#include <nlohmann/json_fwd.hpp>

#include "config.hpp"
#include "model_charts.hpp"
#include "params.hpp"
#include "theme.hpp"

class BlockDiagram;
class ChartPanel;
class QComboBox;
class QLabel;
class QLineEdit;
class QScrollArea;
class QSpinBox;
class QSplitter;

class KnobDrawer;

class ModelView : public QWidget {
  Q_OBJECT
 public:
  explicit ModelView(QWidget* parent = nullptr);
  KnobDrawer* knobDrawer() const { return m_drawer; }  // the knob panel (knob_drawer.hpp)
  ~ModelView() override;

  QList<ChartPanel*> charts() const;
  void applyTheme(const Theme& t);
  // The model the charts show: built from the knobs, or the one given to showConfig.
  const moelab::ModelConfig& labConfig() const;
  // Shows a model that did not come from the knobs (e.g. a model opened from disk); the knobs
  // move to match it as far as they can, and moving one builds a lab model from them again.
  void showConfig(const moelab::ModelConfig& c, const QString& name);
  // How the next model given to showConfig is stored: its checkpoint's dtype ("bf16") and tensor
  // bytes, from the safetensors headers; "" for a model without weights (config.json's dtype).
  void setStorage(const QString& dtype, double bytes);
  // The storage line the charts show ("bf16 as stored: … · fp32: … · one token reads …").
  QString storageText() const;
  // For lessons (lesson_executor.hpp): what the charts show, a preset by name, one knob by its
  // key in the model spec ("experts", "top_k", "dense_layers", "router": "softmax"), and the
  // published model to compare with (an id of resources/real-models, "" for none). setKnob and
  // selectPreset return "" or the problem.
  ModelCharts::ModelSnapshot shown() const { return snapshot(); }
  QString selectPreset(const QString& name);
  QString setKnob(const QString& key, double number, const QString& text);
  QString setCompared(const QString& id);

 public slots:
  // The experts the last token chose in `layer` (from the Tokens view): highlighted in the
  // block drawing, which turns to that layer.
  void setHighlightedExperts(int layer, QVector<int> experts);

 signals:
  // A file the view needs (a preset, a real model's config.json) could not be read. Impossible
  // knob combinations are not errors of this kind: they are shown in red under the knobs.
  void errorOccurred(const QString& message);
  void configChanged();

 protected:
  void resizeEvent(QResizeEvent* e) override;

 private:
  // A spin-box knob, its key in the model spec (presets.hpp) and lab_model_from_json's default.
  struct Knob {
    const char* key;
    QSpinBox* box;
    int fallback;
  };
  QVector<Knob> knobTable(int heads) const;  // heads: the default of kv_heads
  QWidget* buildKnobs();
  void buildCharts();
  void loadRealModels();
  void choosePreset(int index);
  void onKnobChanged();
  void setKnobsFromConfig(const moelab::ModelConfig& c);
  void setConfig(const moelab::ModelConfig& c, const QString& name);
  void updateKnobStates();
  void updateCharts();
  void updateBlock();
  void applyMinimumSizes();
  bool narrow() const;
  int stackedHeight() const;  // each chart's height in one column  // too narrow beside the knobs for two charts side by side (lesson dock open)
  // What the charts show: the model, the published models, the one compared, the highlights.
  ModelCharts::ModelSnapshot snapshot() const;

  Theme m_theme;
  ModelCharts::ModelSnapshot m_model;  // all but `compared`, which the combo box holds
  std::unique_ptr<nlohmann::json> m_extraSpec;  // preset keys without a knob (vocab, dense_hidden…)
  bool m_narrow = false;         // narrow() when the sizes were last set
  bool m_stacked = false;        // the charts in one column (presentation theme, or narrow())
  bool m_settingKnobs = false;   // filling the knobs: their signals must not rebuild the model
  bool m_showingOpened = false;  // the charts show a model given to showConfig
  QString m_storageDtype;        // setStorage, for the next showConfig
  double m_storageBytes = 0;

  QSplitter* m_splitter = nullptr;
  QScrollArea* m_knobScroll = nullptr;
  QWidget* m_knobs = nullptr;
  QComboBox* m_preset = nullptr;
  QSpinBox* m_layers = nullptr;
  QSpinBox* m_hidden = nullptr;
  QSpinBox* m_heads = nullptr;
  QSpinBox* m_kvHeads = nullptr;
  QSpinBox* m_experts = nullptr;
  QSpinBox* m_topK = nullptr;
  QSpinBox* m_expertHidden = nullptr;
  QSpinBox* m_fineGrained = nullptr;
  QSpinBox* m_shared = nullptr;
  QLineEdit* m_denseLayers = nullptr;
  QComboBox* m_router = nullptr;
  QComboBox* m_compare = nullptr;
  QSpinBox* m_blockLayer = nullptr;
  QLabel* m_summary = nullptr;
  QLabel* m_source = nullptr;
  QLabel* m_error = nullptr;

  QScrollArea* m_chartScroll = nullptr;
  QSplitter* m_chartRows = nullptr;  // two rows of two charts
  ChartPanel* m_paramsChart = nullptr;
  ChartPanel* m_realChart = nullptr;
  ChartPanel* m_memoryChart = nullptr;
  ChartPanel* m_blockChart = nullptr;
  BlockDiagram* m_block = nullptr;
  KnobDrawer* m_drawer = nullptr;
};
