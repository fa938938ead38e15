// MainWindow: the Device menu (CPU or CUDA) and its Precision group (fp32, bf16, tf32), and the
// fallbacks when a worker cannot use the device or precision asked for.
#include "main_window.hpp"

#include <QAction>
#include <QActionGroup>
#include <QLabel>
#include <QMenu>
#include <QMenuBar>
#include <QSettings>
#include <QStatusBar>

#include "devices.hpp"
#include "tokens_view.hpp"
#include "training_view.hpp"

void MainWindow::createDeviceMenu() {
  m_deviceMenu = menuBar()->addMenu(tr("&Device"));
  m_deviceMenu->setToolTipsVisible(true);  // the reason a device cannot be used
  m_devices = new QActionGroup(this);
  for (const moelab::DeviceChoice& d : moelab::list_devices()) {
    const QString label = QString::fromStdString(d.label);
    QAction* a = m_deviceMenu->addAction(d.available ? label : tr("%1 — not available").arg(label));
    a->setData(QString::fromStdString(d.id));
    a->setCheckable(true);
    a->setEnabled(d.available);
    const QString tip = d.available ? tr("Run the models and training on %1").arg(label) : QString::fromStdString(d.why_not);
    a->setToolTip(tip);
    a->setStatusTip(tip);
    m_devices->addAction(a);
  }
  connect(m_devices, &QActionGroup::triggered, this, [this](QAction* a) { setDevice(a->data().toString()); });

  // How the matrix products compute (core/backend.hpp, Precision); tips set by usePrecision, as
  // they depend on the device in use.
  m_deviceMenu->addSection(tr("Precision"));
  m_precisions = new QActionGroup(this);
  const std::pair<const char*, QString> modes[] = {
      {"fp32", tr("fp32 (exact)")},
      {"bf16", tr("bf16 products (bf16 operands, fp32 sums)")},
      {"tf32", tr("tf32 (GPU tensor cores)")},
  };
  for (const auto& [id, label] : modes) {
    QAction* a = m_deviceMenu->addAction(label);
    a->setData(QString::fromLatin1(id));
    a->setCheckable(true);
    m_precisions->addAction(a);
  }
  connect(m_precisions, &QActionGroup::triggered, this, [this](QAction* a) { setPrecision(a->data().toString()); });
}

QAction* MainWindow::deviceAction(const QString& id) const {
  for (QAction* a : m_devices->actions())
    if (a->data().toString() == id) return a;
  return nullptr;
}

QString MainWindow::deviceName() const { return m_deviceLabel->text(); }

QAction* MainWindow::precisionAction(const QString& id) const {
  for (QAction* a : m_precisions->actions())
    if (a->data().toString() == id) return a;
  return nullptr;
}

void MainWindow::useDevice(const QString& device) {
  m_device = device;
  // "auto" (and a choice from another machine) means the GPU where this one has it.
  const bool gpu = device != QLatin1String("cpu") && deviceAction(QStringLiteral("cuda"))->isEnabled();
  const QString active = gpu ? QStringLiteral("cuda") : QStringLiteral("cpu");
  deviceAction(active)->setChecked(true);
  m_activeDevice = active;
  m_tokens->setDevice(active);
  m_training->setDevice(active);
  usePrecision(m_precision);  // the modes the device has
}

void MainWindow::usePrecision(const QString& precision) {
  m_precision = precisionAction(precision.toLower()) ? precision.toLower() : QStringLiteral("fp32");
  const bool gpu = m_activeDevice == QLatin1String("cuda");
  const std::string device = gpu ? "cuda" : "cpu";
  auto tip = [gpu](const QString& id) {
    if (id == QLatin1String("fp32")) return tr("fp32 operands and sums: exact, the reference the other modes are measured against");
    if (id == QLatin1String("tf32"))
      return tr("cuBLAS's dense products on TF32 tensor cores (operands rounded to a 10-bit mantissa, fp32 sums); "
                "the experts' grouped products stay fp32");
    return gpu ? tr("Matrix products with bf16 operands (weights held in bf16 beside the fp32 master copy) and fp32 "
                    "sums: faster on the GPU, with bf16's rounding in every product")
               : tr("bf16 on the CPU is an emulation: it shows bf16's rounding (the numbers a GPU gives), not a "
                    "speed-up — it is slower than fp32");
  };
  for (QAction* a : m_precisions->actions()) {
    const QString id = a->data().toString();
    const QString why = QString::fromStdString(moelab::precision_why_not(device, moelab::parse_precision(id.toStdString())));
    a->setEnabled(why.isEmpty());
    a->setToolTip(why.isEmpty() ? tip(id) : why);
    a->setStatusTip(a->toolTip());
  }
  // A mode the device lacks (tf32 on the CPU) computes in fp32; the choice is kept for a GPU, as
  // "auto" is for the device.
  QAction* active = precisionAction(m_precision);
  if (!active->isEnabled()) active = precisionAction(QStringLiteral("fp32"));
  active->setChecked(true);
  m_activePrecision = active->data().toString();
  const moelab::Precision p = moelab::parse_precision(active->data().toString().toStdString());
  m_tokens->setPrecision(p);
  m_training->setPrecision(p);
}

void MainWindow::setPrecision(const QString& precision) {
  if (precision.toLower() != m_precision) markUnsaved();
  const QString before = m_activePrecision;
  usePrecision(precision);
  if (m_activePrecision == before) return;
  m_tokens->reloadModel();  // on a backend in the new mode, as a device change does
  const QString name = m_precisions->checkedAction()->text();
  statusBar()->showMessage(m_training->isRunning()
                               ? tr("Precision: %1 for the Tokens view and the next training run (the run going on "
                                    "keeps its precision)")
                                     .arg(name)
                               : tr("Precision: %1 for the Tokens view and training").arg(name),
                           10000);
}

void MainWindow::setDevice(const QString& device) {
  if (device != m_device) markUnsaved();
  const QString before = m_activeDevice;
  useDevice(device);
  if (m_activeDevice == before) return;
  m_tokens->reloadModel();
  const QString name = m_devices->checkedAction()->text();
  statusBar()->showMessage(m_training->isRunning()
                               ? tr("Device: %1 for the Tokens view and the next training run (the run going on keeps "
                                    "its device)")
                                     .arg(name)
                               : tr("Device: %1 for the Tokens view and training").arg(name),
                           10000);
}

void MainWindow::fallBackToCpu() {
  deviceAction(QStringLiteral("cpu"))->setChecked(true);
  m_activeDevice = QStringLiteral("cpu");
  m_tokens->setDevice(QStringLiteral("cpu"));
  m_training->setDevice(QStringLiteral("cpu"));
  usePrecision(m_precision);  // the CPU's modes (no tf32)
}

void MainWindow::fallBackToFp32() {
  precisionAction(QStringLiteral("fp32"))->setChecked(true);
  m_activePrecision = QStringLiteral("fp32");
  m_tokens->setPrecision(moelab::Precision::FP32);
  m_training->setPrecision(moelab::Precision::FP32);
}
