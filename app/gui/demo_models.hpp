// Real MoE routing shapes in tiny widths, for the screenshots and the GUI tests: OLMoE-1B-7B's
// 64 experts × 16 layers, Qwen3-30B-A3B's 128 × 48 and DeepSeek-V3's 256 × 61 (3 dense layers
// first, a shared expert, sigmoid router), all top-8, as lab models (Mixtral and Qwen2-MoE
// families, the lab's byte tokenizer) with random weights saved in bf16 as a checkpoint folder,
// so that opening one goes through the same load as a real checkpoint. Hidden width 32–64: a
// few MB, opened in a second on 2 cores.
#pragma once

#include <QString>
#include <QVector>

namespace DemoModels {

struct Shape {
  QString id;     // "olmoe-64x16": folder and screenshot names
  QString title;  // "OLMoE-1B-7B's routing shape (64 experts × 16 layers, top-8)"
  int layers = 0, experts = 0, topK = 0, hidden = 0, expertHidden = 0, denseLayers = 0, shared = 0;
  bool sigmoid = false;
};
const QVector<Shape>& shapes();

// Writes the shape's config.json and model.safetensors (bf16) into `dir`; "" or the error.
QString write(const Shape& shape, const QString& dir);

}  // namespace DemoModels
