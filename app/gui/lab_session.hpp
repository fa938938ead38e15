// A lab session: the views' settings, the model in the Tokens view and the runs (their folders),
// saved as one small JSON file ("*.moelab") so a class can be prepared and reopened. Runs stay
// in their own folders (append-only logs); the session only points at them.
#pragma once

#include <QJsonObject>
#include <QString>

namespace LabSession {

constexpr const char* kFormat = "moelab-session";
constexpr int kVersion = 1;
constexpr qint64 kMaxBytes = 4 << 20;

// Atomic (QSaveFile): a crash leaves the old file or the new one. "" or one error line.
QString save(const QString& path, QJsonObject session);
// Reads and checks the file (size, JSON, format, version). Sets *error (one line naming the
// file) and returns {} on failure.
QJsonObject load(const QString& path, QString* error);

}  // namespace LabSession
