// Shared by the Qt Test suites of the window: the core's own routing trace for a snapshot, and a
// lab window on the built-in model with a few generated tokens.
#pragma once

#include <vector>

#include "main_window.hpp"
#include "model.hpp"
#include "presets.hpp"
#include "tokens_view.hpp"

namespace guitest {

// The core's own trace for the snapshot's tokens, with the same overrides.
inline moelab::RoutingTrace coreTrace(const TokensSnapshot& s, const moelab::RoutingOverrides* ov = nullptr) {
  moelab::Model m = moelab::Model::load(moelab::resources_dir() + "/models/builtin", moelab::make_eigen_backend());
  moelab::RoutingTrace trace;
  moelab::KvCache cache = m.new_cache(s.count());
  m.forward(std::vector<int32_t>(s.tokens.begin(), s.tokens.end()), cache, &trace, ov);
  return trace;
}

// A 1280×800 window on the Tokens view, the built-in model with a prompt and 6 generated tokens.
inline MainWindow* labWindow() {
  auto* w = new MainWindow;
  w->resize(1280, 800);
  w->show();
  w->tabs()->setCurrentWidget(w->tokensView());
  TokensView* t = w->tokensView();
  t->waitForIdle();
  t->setPrompt(QStringLiteral("12+7=19; "));
  t->waitForIdle();
  for (int i = 0; i < 6; ++i) t->stepOnce();
  t->waitForIdle();
  return w;
}

}  // namespace guitest
