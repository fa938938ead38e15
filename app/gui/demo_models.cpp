#include "demo_models.hpp"

#include <nlohmann/json.hpp>

#include "model.hpp"
#include "presets.hpp"
#include "safetensors.hpp"

namespace DemoModels {

const QVector<Shape>& shapes() {
  static const QVector<Shape> all{
      {QStringLiteral("olmoe-64x16"), QStringLiteral("OLMoE-1B-7B's routing shape: 64 experts × 16 layers, top-8"),
       16, 64, 8, 64, 32, 0, 0, false},
      {QStringLiteral("qwen3-128x48"), QStringLiteral("Qwen3-30B-A3B's routing shape: 128 experts × 48 layers, top-8"),
       48, 128, 8, 64, 16, 0, 0, false},
      {QStringLiteral("deepseek-256x61"),
       QStringLiteral("DeepSeek-V3's routing shape: 256 experts × 61 layers (3 dense), 1 shared, sigmoid, top-8"),
       61, 256, 8, 32, 8, 3, 1, true},
  };
  return all;
}

QString write(const Shape& shape, const QString& dir) {
  try {
    nlohmann::json spec = {{"layers", shape.layers},       {"hidden", shape.hidden},   {"heads", 4},
                           {"kv_heads", 2},                {"experts", shape.experts}, {"top_k", shape.topK},
                           {"expert_hidden", shape.expertHidden}, {"shared_experts", shape.shared},
                           {"router", shape.sigmoid ? "sigmoid" : "softmax"}};
    if (shape.denseLayers > 0) {
      nlohmann::json dense = nlohmann::json::array();
      for (int l = 0; l < shape.denseLayers; ++l) dense.push_back(l);
      spec["dense_layers"] = dense;
    }
    moelab::ModelConfig c = moelab::lab_model_from_json(spec, shape.id.toStdString());
    // Weights wide enough (std 0.3 on a width of 32–64) that each router has clear favourites,
    // as trained routers do; the lab's usual 0.02 would give every expert about 1/E.
    moelab::Model::random(c, 7, moelab::make_eigen_backend(), 0.3f).save(dir.toStdString(), moelab::DType::BF16);
    return {};
  } catch (const std::exception& e) {
    return QString::fromUtf8(e.what());
  }
}

}  // namespace DemoModels
