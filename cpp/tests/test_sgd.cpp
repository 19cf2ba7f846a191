// SGD: one squared-loss update, one BPR update and the RMSE of a tiny model, each against
// values worked out by hand, for several padded widths (each instruction set's kernel takes
// rows of 1, 2, 4 or 8 vectors through registers and any other width through memory).
#include <cmath>
#include <cstdint>
#include <stdexcept>
#include <string>
#include <vector>

#include "check.hpp"
#include "recore/sgd.hpp"

namespace {

using recore::RatingGrid;
using recore::SgdModel;
using recore::SgdRates;

// Padded widths of a two-factor model: the kernels must read only the two real factors and
// keep the padding zero whatever the width.
const int64_t kStrides[] = {16, 32, 48, 64, 128};

// Owns the arrays of an SgdModel of two factors whose rows are given unpadded.
struct TinyModel {
  int64_t stride;
  std::vector<float> user_factors, item_factors, user_biases, item_biases, user_sums, item_sums;
  SgdModel model;

  TinyModel(int64_t stride_, const std::vector<float>& users, const std::vector<float>& items, float global_mean)
      : stride(stride_),
        user_factors(users.size() / 2 * stride_, 0.0f),
        item_factors(items.size() / 2 * stride_, 0.0f) {
    for (size_t r = 0; r < users.size() / 2; ++r)
      for (int j = 0; j < 2; ++j) user_factors[r * stride + j] = users[2 * r + j];
    for (size_t r = 0; r < items.size() / 2; ++r)
      for (int j = 0; j < 2; ++j) item_factors[r * stride + j] = items[2 * r + j];
    model.user_factors = user_factors.data();
    model.item_factors = item_factors.data();
    model.users = static_cast<int64_t>(users.size() / 2);
    model.items = static_cast<int64_t>(items.size() / 2);
    model.factors = 2;
    model.stride = stride;
    model.global_mean = global_mean;
  }

  void set_biases(std::vector<float> users, std::vector<float> items) {
    user_biases = std::move(users);
    item_biases = std::move(items);
    model.user_biases = user_biases.empty() ? nullptr : user_biases.data();
    model.item_biases = item_biases.data();
  }

  // The adaptive schedule, every row's sum G starting at 1 (so the first rate is eta).
  void set_adaptive() {
    user_sums.assign(model.users, 1.0f);
    item_sums.assign(model.items, 1.0f);
    model.user_rate_sums = user_sums.data();
    model.item_rate_sums = item_sums.data();
  }

  float user(int64_t r, int j) const { return user_factors[r * stride + j]; }
  float item(int64_t r, int j) const { return item_factors[r * stride + j]; }

  // Every value beyond the two factors is still zero.
  bool padding_zero() const {
    for (const std::vector<float>* rows : {&user_factors, &item_factors})
      for (size_t k = 0; k < rows->size(); ++k)
        if (int64_t(k) % stride >= 2 && (*rows)[k] != 0.0f) return false;
    return true;
  }
};

// One rating (user 0, item 0, value r) in a one-block grid, run as an epoch on one thread.
double one_rating_epoch(TinyModel& m, float rating, const SgdRates& rates) {
  const int32_t users[] = {0}, items[] = {0}, order[] = {0};
  const float values[] = {rating};
  const int64_t block_starts[] = {0, 1};
  RatingGrid grid;
  grid.users = users;
  grid.items = items;
  grid.values = values;
  grid.block_starts = block_starts;
  grid.blocks = 1;
  return recore::sgd_squared_epoch(grid, order, m.model, rates, 1);
}

constexpr double kTolerance = 1e-6;

std::string width(int64_t stride) { return "stride " + std::to_string(stride); }

}  // namespace

// p = (1, 2), q = (0.5, -1), mu = 3, b_u = 0.5, b_i = -0.25, r = 4;
// eta = 0.1, lambda = 0.2, lambda_b = 0.5, constant rate.
//   r_hat = 3 + 0.5 - 0.25 + (0.5 - 2) = 1.75,  e = 4 - 1.75 = 2.25 (squared 5.0625)
//   grad p = lambda p - e q = (0.2, 0.4) - (1.125, -2.25) = (-0.925, 2.65)
//   grad q = lambda q - e p = (0.1, -0.2) - (2.25, 4.5) = (-2.15, -4.7)
//   p' = p - eta grad p = (1.0925, 1.735),  q' = q - eta grad q = (0.715, -0.53)
//   b_u' = 0.5 - 0.1 (0.5 * 0.5 - 2.25) = 0.7,  b_i' = -0.25 - 0.1 (0.5 * -0.25 - 2.25) = -0.0125
// Adaptive schedule, G = 1 for both rows: the same step (eta / sqrt(1) = eta), then G grows
// by the mean squared gradient over the two factors:
//   G_u' = 1 + (0.925^2 + 2.65^2) / 2 = 1 + 7.878125 / 2 = 4.9390625
//   G_i' = 1 + (2.15^2 + 4.7^2) / 2 = 1 + 26.7125 / 2 = 14.35625
RECORE_TEST(sgd_squared_update_by_hand) {
  const SgdRates rates{0.1f, 0.2f, 0.5f};
  for (bool adaptive : {false, true}) {
    for (int64_t stride : kStrides) {
      recore::testing::current_test_detail() = width(stride) + (adaptive ? ", adaptive" : ", constant");
      TinyModel m(stride, {1, 2}, {0.5f, -1}, 3.0f);
      m.set_biases({0.5f}, {-0.25f});
      if (adaptive) m.set_adaptive();
      CHECK_EQ(one_rating_epoch(m, 4.0f, rates), 5.0625);
      CHECK_NEAR(m.user(0, 0), 1.0925, kTolerance);
      CHECK_NEAR(m.user(0, 1), 1.735, kTolerance);
      CHECK_NEAR(m.item(0, 0), 0.715, kTolerance);
      CHECK_NEAR(m.item(0, 1), -0.53, kTolerance);
      CHECK_NEAR(m.user_biases[0], 0.7, kTolerance);
      CHECK_NEAR(m.item_biases[0], -0.0125, kTolerance);
      if (adaptive) {
        CHECK_NEAR(m.user_sums[0], 4.9390625, 1e-5);
        CHECK_NEAR(m.item_sums[0], 14.35625, 1e-5);
      }
      CHECK(m.padding_zero());
    }
  }
  recore::testing::current_test_detail().clear();
}

// The same rating without biases: r_hat = 3 + (0.5 - 2) = 1.5, e = 2.5 (squared 6.25)
//   grad p = (0.2, 0.4) - 2.5 (0.5, -1) = (-1.05, 2.9),  p' = (1.105, 1.71)
//   grad q = (0.1, -0.2) - 2.5 (1, 2) = (-2.4, -5.2),    q' = (0.74, -0.48)
RECORE_TEST(sgd_squared_update_without_biases_by_hand) {
  const SgdRates rates{0.1f, 0.2f, 0.5f};
  for (int64_t stride : kStrides) {
    recore::testing::current_test_detail() = width(stride);
    TinyModel m(stride, {1, 2}, {0.5f, -1}, 3.0f);
    CHECK_EQ(one_rating_epoch(m, 4.0f, rates), 6.25);
    CHECK_NEAR(m.user(0, 0), 1.105, kTolerance);
    CHECK_NEAR(m.user(0, 1), 1.71, kTolerance);
    CHECK_NEAR(m.item(0, 0), 0.74, kTolerance);
    CHECK_NEAR(m.item(0, 1), -0.48, kTolerance);
    CHECK(m.padding_zero());
  }
  recore::testing::current_test_detail().clear();
}

// BPR, user p = (1, 2), positive q_i = (0.5, -1), negative q_j = (1, 0), item biases b_i = 1.5,
// b_j = -1; eta = 0.1, lambda = 0.2, lambda_b = 0.4, constant rate.
//   x = p . (q_i - q_j) + b_i - b_j = (1 * -0.5 + 2 * -1) + 2.5 = 0, so d = 1 / (1 + e^0) = 0.5
//   and the triple does not count as correct (x > 0 is false).
//   grad p   = lambda p - d (q_i - q_j) = (0.2, 0.4) - 0.5 (-0.5, -1) = (0.45, 0.9),  p' = (0.955, 1.91)
//   grad q_i = lambda q_i - d p = (0.1, -0.2) - (0.5, 1) = (-0.4, -1.2),         q_i' = (0.54, -0.88)
//   grad q_j = lambda q_j + d p = (0.2, 0) + (0.5, 1) = (0.7, 1),                q_j' = (0.93, -0.1)
//   b_i' = 1.5 - 0.1 (0.4 * 1.5 - 0.5) = 1.49,  b_j' = -1 - 0.1 (0.4 * -1 + 0.5) = -1.01
RECORE_TEST(sgd_bpr_update_by_hand) {
  const SgdRates rates{0.1f, 0.2f, 0.4f};
  const int32_t users[] = {0}, positives[] = {0}, negatives[] = {1};
  for (int64_t stride : kStrides) {
    recore::testing::current_test_detail() = width(stride);
    TinyModel m(stride, {1, 2}, {0.5f, -1, 1, 0}, 0.0f);
    m.set_biases({}, {1.5f, -1.0f});
    CHECK_EQ(recore::sgd_bpr_triples(users, positives, negatives, 1, m.model, rates), int64_t{0});
    CHECK_NEAR(m.user(0, 0), 0.955, kTolerance);
    CHECK_NEAR(m.user(0, 1), 1.91, kTolerance);
    CHECK_NEAR(m.item(0, 0), 0.54, kTolerance);
    CHECK_NEAR(m.item(0, 1), -0.88, kTolerance);
    CHECK_NEAR(m.item(1, 0), 0.93, kTolerance);
    CHECK_NEAR(m.item(1, 1), -0.1, kTolerance);
    CHECK_NEAR(m.item_biases[0], 1.49, kTolerance);
    CHECK_NEAR(m.item_biases[1], -1.01, kTolerance);
    CHECK(m.padding_zero());
  }
  recore::testing::current_test_detail().clear();
}

// BPR where the positive already wins: p = (1, 2), q_i = (1, 1), q_j = (0, 0), no biases.
//   x = p . (q_i - q_j) = 3, counted as correct; d = 1 / (1 + e^3) = 0.04742587317756678
//   (eta = 0.1, lambda = 0):
//   p'   = p + 0.1 d (q_i - q_j) = (1 + 0.0047425873, 2 + 0.0047425873)
//   q_i' = q_i + 0.1 d p         = (1 + 0.0047425873, 1 + 0.0094851746)
//   q_j' = q_j - 0.1 d p         = (-0.0047425873, -0.0094851746)
RECORE_TEST(sgd_bpr_update_correct_pair_by_hand) {
  const SgdRates rates{0.1f, 0.0f, 0.0f};
  const int32_t users[] = {0}, positives[] = {0}, negatives[] = {1};
  const double step = 0.1 * 0.04742587317756678;
  for (int64_t stride : kStrides) {
    recore::testing::current_test_detail() = width(stride);
    TinyModel m(stride, {1, 2}, {1, 1, 0, 0}, 0.0f);
    CHECK_EQ(recore::sgd_bpr_triples(users, positives, negatives, 1, m.model, rates), int64_t{1});
    CHECK_NEAR(m.user(0, 0), 1 + step, kTolerance);
    CHECK_NEAR(m.user(0, 1), 2 + step, kTolerance);
    CHECK_NEAR(m.item(0, 0), 1 + step, kTolerance);
    CHECK_NEAR(m.item(0, 1), 1 + 2 * step, kTolerance);
    CHECK_NEAR(m.item(1, 0), -step, kTolerance);
    CHECK_NEAR(m.item(1, 1), -2 * step, kTolerance);
    CHECK(m.padding_zero());
  }
  recore::testing::current_test_detail().clear();
}

// Users p_0 = (1, 0), p_1 = (0, 2); items q_0 = (1, 1), q_1 = (2, -1); mu = 3,
// b_u = (0.5, -0.5), b_i = (0.25, -0.25). Ratings and predictions:
//   (0, 0, 5.75):  3 + 0.5 + 0.25 + 1 = 4.75,   error 1
//   (1, 1, -1.75): 3 - 0.5 - 0.25 - 2 = 0.25,   error -2
//   (0, 1, 3.25):  3 + 0.5 - 0.25 + 2 = 5.25,   error -2
//   RMSE = sqrt((1 + 4 + 4) / 3) = sqrt(3).
// Without biases the predictions are 4, 1 and 5, errors 1.75, -2.75, -1.75:
//   RMSE = sqrt((3.0625 + 7.5625 + 3.0625) / 3) = sqrt(4.5625).
RECORE_TEST(sgd_rmse_by_hand) {
  const int32_t users[] = {0, 1, 0}, items[] = {0, 1, 1};
  const float ratings[] = {5.75f, -1.75f, 3.25f};
  for (int64_t stride : kStrides) {
    recore::testing::current_test_detail() = width(stride);
    TinyModel m(stride, {1, 0, 0, 2}, {1, 1, 2, -1}, 3.0f);
    CHECK_NEAR(recore::sgd_rmse(users, items, ratings, 3, m.model, 1), std::sqrt(4.5625), 1e-12);
    m.set_biases({0.5f, -0.5f}, {0.25f, -0.25f});
    for (int threads : {1, 2, 3})
      CHECK_NEAR(recore::sgd_rmse(users, items, ratings, 3, m.model, threads), std::sqrt(3.0), 1e-12);
    CHECK_EQ(recore::sgd_rmse(users, items, ratings, 0, m.model, 1), 0.0);
  }
  recore::testing::current_test_detail().clear();
}

RECORE_TEST(sgd_refuses_unpadded_factors) {
  TinyModel m(16, {1, 2}, {0.5f, -1}, 0.0f);
  m.model.stride = 2;  // rows must be padded to whole 16-float vectors
  const int32_t users[] = {0}, items[] = {0};
  const float ratings[] = {1.0f};
  CHECK_THROWS(std::invalid_argument, recore::sgd_rmse(users, items, ratings, 1, m.model, 1));
}
