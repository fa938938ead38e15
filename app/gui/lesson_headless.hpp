// `moelab lesson NAME|FILE --out DIR [--theme normal|presentation] [--size WxH]`: plays a lesson
// without a display (offscreen): every step, each question answered with its stated answer;
// writes step-NN.png of the whole window (lesson panel included) after each step and
// handout.pdf (A4, each step's title, text, closing text and check results above its picture);
// prints each check's result. Exit 0 when every action ran and every check held, 1 otherwise,
// 2 for bad arguments or a malformed lesson.
#pragma once

#include <QStringList>

class MainWindow;

int lessonMain(const QStringList& args);

// The handout of steps already played: pictures and texts, one A4 page per step. "" or the error.
struct HandoutStep {
  QString title, markdown;  // the step's text and what happened, as the panel showed it
  QString picture;          // PNG path
};
QString writeHandout(const QString& path, const QString& lessonTitle, const QString& summary,
                     const QList<HandoutStep>& steps);
