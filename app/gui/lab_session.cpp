#include "lab_session.hpp"

#include <QFile>
#include <QFileInfo>
#include <QJsonDocument>
#include <QObject>
#include <QSaveFile>

namespace LabSession {

QString save(const QString& path, QJsonObject session) {
  session.insert(QStringLiteral("format"), QString::fromLatin1(kFormat));
  session.insert(QStringLiteral("version"), kVersion);
  const QByteArray data = QJsonDocument(session).toJson(QJsonDocument::Indented);
  QSaveFile f(path);
  if (!f.open(QIODevice::WriteOnly) || f.write(data) != data.size() || !f.commit())
    return QObject::tr("%1: cannot save the session (%2)").arg(path, f.errorString());
  return {};
}

QJsonObject load(const QString& path, QString* error) {
  auto fail = [&](const QString& why) {
    *error = QStringLiteral("%1: %2").arg(path, why);
    return QJsonObject{};
  };
  // A FIFO or a device would block QFile::open (and then read forever): only plain files.
  const QFileInfo info(path);
  if (info.exists() && !info.isFile()) return fail(QObject::tr("not a regular file"));
  QFile f(path);
  if (!f.open(QIODevice::ReadOnly)) return fail(f.errorString());
  if (f.size() > kMaxBytes) return fail(QObject::tr("%1 bytes is too large for a session file").arg(f.size()));
  QJsonParseError pe;
  const QJsonDocument doc = QJsonDocument::fromJson(f.read(kMaxBytes), &pe);
  if (pe.error != QJsonParseError::NoError)
    return fail(QObject::tr("malformed JSON at byte %1 (%2)").arg(pe.offset).arg(pe.errorString()));
  if (!doc.isObject()) return fail(QObject::tr("a session must be a JSON object"));
  const QJsonObject o = doc.object();
  if (o.value(QStringLiteral("format")).toString() != QLatin1String(kFormat))
    return fail(QObject::tr("not a MoE Lab session (no \"format\": \"%1\")").arg(kFormat));
  if (o.value(QStringLiteral("version")).toInt() != kVersion)
    return fail(QObject::tr("session version %1 is not supported (this lab reads %2)")
                    .arg(o.value(QStringLiteral("version")).toInt())
                    .arg(kVersion));
  error->clear();
  return o;
}

}  // namespace LabSession
