// The Tokens view: type a prompt, step through generation token by token and watch the router:
// the routing heatmap (tokens x experts), the text coloured by expert, the expert load, the
// router's arithmetic for one token ("why"), expert co-activation, and the next-token
// probabilities; knobs to change top-k, ban or force an expert, switch renormalisation, and limit
// expert capacity (dropped or re-routed choices are marked in the routing charts).
#pragma once

#include <QThread>
#include <QWidget>
#include <functional>

#include "generation_worker.hpp"

class ChartPage;
class ChartPanel;
class QComboBox;
class QDoubleSpinBox;
class QLabel;
class QLineEdit;
class QPushButton;
class QSlider;
class QSpinBox;
class QTabWidget;
class QTimer;
class TokenText;
struct Theme;

class KnobDrawer;

class TokensView : public QWidget {
  Q_OBJECT
 public:
  explicit TokensView(QWidget* parent = nullptr);
  KnobDrawer* knobDrawer() const { return m_drawer; }  // the knob panel (knob_drawer.hpp)
  ~TokensView() override;

  QList<ChartPanel*> charts() const;
  void applyTheme(const Theme& t);
  SnapshotPtr snapshot() const { return m_snap; }
  int selectedLayer() const;      // index into snapshot()->layers, or -1 for all layers
  int selectedToken() const { return m_token; }
  // Blocks until the worker has answered every request sent so far (tests, screenshots).
  bool waitForIdle(int timeoutMs = 20000);
  bool idle() const { return m_pending == 0 && !m_loading; }  // no request nor load in flight
  // Knobs, for tests and the GUI alike.
  void setPrompt(const QString& text);
  void setTopKOverride(int k);  // 0 = the model's
  void setBannedExperts(const QString& list);
  void setForcedExpert(int e);  // -1 = none
  void setRenormalize(int mode);  // -1 model, 0 off, 1 on
  void setCapacityFactor(double factor);  // 0 = no limit
  void setOverflowReroute(bool reroute);  // overflow re-routed to the next-best expert, else dropped
  void selectLayer(int index);    // -1 = all layers
  void selectToken(int index);    // index into the text (clamped), -1 = none
  // The experts the text is coloured by ("5", "3,17,42"; at most 8), "" for the default: each
  // token's first choice up to 8 experts, the busiest 4 of the layer beyond.
  void setTextExperts(const QString& list);
  TokenText* tokenText() const { return m_tokenText; }
  // Data of the heatmap as drawn (TokenCharts reads it back): value at (token, expert) of the
  // selected layer, and whether the cell is marked as chosen (a slot that ran there: kept or
  // re-routed).
  double heatmapValue(int token, int expert) const;
  bool heatmapMarked(int token, int expert) const;
  int markedPerToken(int token) const;
  // The status line under the knobs (model, tokens, top-k, bans, capacity).
  QString statusText() const;
  // The mark drawn at a cell: -1 none, 0 chosen, 1 dropped (over capacity), 2 re-routed here.
  int heatmapMark(int token, int expert) const;
  // The chart pages (for screenshots).
  QTabWidget* pages() const { return m_pages; }
  QLineEdit* promptEdit() const { return m_prompt; }
  // A model load in flight (File ▸ Open Model, a device switch): until the new model is in place
  // the one shown keeps working. cancelLoad stops it (Model::load returns within a few MB of
  // reading, its mappings released) and nothing of it is shown.
  bool loading() const { return bool(m_loading); }
  int loadsRunning() const;  // loader threads not yet finished, cancelled ones included
  void cancelLoad();

 public slots:
  void openModel(const QString& path);
  // "cpu" or "cuda" for the models loaded from now on; reloadModel moves the one shown there.
  void setDevice(const QString& device);
  // The precision of matrix products for the models loaded from now on; likewise.
  void setPrecision(moelab::Precision precision);
  void reloadModel();
  void stepOnce();
  void run();
  void pause();
  void resetText();

 signals:
  void errorOccurred(const QString& message);
  void modelChanged(const QString& name, const moelab::ModelConfig& config);
  // GenerationWorker::deviceInUse
  void deviceInUse(const QString& name, const QString& deviceProblem, const QString& precisionProblem);
  void lastTokenRouting(int layer, QVector<int> experts);  // for the Model view's block drawing
  // A model load: started (what is opened), its stage (GenerationWorker::loadProgress), ended
  // (loaded, failed, or cancelled by cancelLoad).
  void loadStarted(const QString& what);
  void loadProgress(const QString& stage, double fraction);  // fraction -1: not known
  void loadFinished(bool cancelled);
  // The opened model's checkpoint (before modelChanged).
  void checkpointRead(const CheckpointSummary& summary);

 protected:
  // The next-token chart draws as many bars as its height has room for: drawn again on a resize.
  bool eventFilter(QObject* watched, QEvent* e) override;

 private slots:
  void onSnapshot(SnapshotPtr s);
  void onModelLoaded(const QString& name, const moelab::ModelConfig& config);
  void onTokenizerLoaded(const QString& description);
  void routingKnobsChanged();

 private:
  GenerationSettings settings() const;
  void request(int pendingDelta);
  void startLoad(const QString& what, const std::function<void(GenerationWorker*, LoadTicketPtr)>& load);
  void redraw();
  const TokensSnapshot& snap() const;  // the snapshot shown (an empty one before the first)

  QThread m_thread;
  GenerationWorker* m_worker = nullptr;
  SnapshotPtr m_snap;
  bool m_hasModel = false;  // the worker has a model (the first load may still run)
  LoadTicketPtr m_loading;  // the load in flight, null when none
  int m_pending = 0;
  int m_token = -1;
  bool m_running = false;
  moelab::ModelConfig m_config;

  QLineEdit* m_prompt = nullptr;
  QPushButton *m_step = nullptr, *m_run = nullptr, *m_pause = nullptr, *m_reset = nullptr;
  QSlider* m_speed = nullptr;
  QDoubleSpinBox* m_temperature = nullptr;
  QSpinBox *m_seed = nullptr, *m_topk = nullptr, *m_force = nullptr;
  QDoubleSpinBox* m_capacity = nullptr;
  QComboBox* m_overflow = nullptr;
  QLineEdit* m_ban = nullptr;
  QLineEdit* m_textExperts = nullptr;
  QComboBox *m_renorm = nullptr, *m_layer = nullptr;
  QLabel* m_status = nullptr;
  QTimer* m_runTimer = nullptr;
  ChartPanel *m_heatmap = nullptr, *m_text = nullptr, *m_load = nullptr, *m_why = nullptr, *m_coact = nullptr,
             *m_next = nullptr, *m_tokenLayers = nullptr;
  TokenText* m_tokenText = nullptr;
  QTabWidget* m_pages = nullptr;
  QList<ChartPage*> m_chartPages;
  QLabel* m_whyLabel = nullptr;
  KnobDrawer* m_drawer = nullptr;
};
