// The compiled reference of the throughput harness (bench/throughput.py --cpp):
// a C++ gRPC server (gRPC's callback API) on the gateway's own proto,
// proto/eligibility/v1/eligibility.proto, that decides every claim line with
// one hash lookup, so that it does per line roughly what the gateway does.
//
//   build/eligibility_cpp_server --index FILE --port 50099 [--host 127.0.0.1]
//
// FILE is written by bench.throughput (write_cpp_index) from the same national
// data set the gateway serves: each practitioner's status and open
// registrations as of the data set's day. Per claim: the request checks of
// SPEC §4 (claim_id, channel, institution code, line count, dates real and not
// in the future, principal, amounts, code format) and rules 1-6 per line:
// principal payable, prescriber code, registered, registered at the claim's
// institution (hospital claims), suspended/terminated with the emergency
// override, warned. Unlike the gateway it decides every line as of the data
// set's day (the harness's claims are all dated that day) and has no metrics,
// interceptor, audit queue or live updates: it is the distance to the
// physical limit, not a second gateway.

#include <grpcpp/grpcpp.h>

#include <chrono>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <iostream>
#include <string>
#include <unordered_map>
#include <vector>

#include "eligibility/v1/eligibility.grpc.pb.h"

namespace v1 = eligibility::v1;

namespace {

constexpr uint32_t kNoInst = 0xFFFFFFFFu;
constexpr int kMaxLines = 1000;
constexpr uint64_t kPracScale = 1000000000000ULL;  // 10**12
constexpr uint64_t kInstScale = 100000000000ULL;   // 10**11
constexpr int64_t kKeyEmpty = -1;
constexpr int64_t kKeyMalformed = -2;

// One practitioner as of the data set's day (what the gateway's index answers
// for that day): status, last day of a suspension, open registrations.
struct Rec {
  int32_t until;  // YYYYMMDD, 0 if none
  uint8_t status;  // v1::PractitionerStatus (ACTIVE, WARNED, SUSPENDED, TERMINATED)
  uint8_t n_open;  // registrations open on the day (0 = NOT_REGISTERED)
  uint32_t inst[3];  // their institutions' rows
};

// The file written by bench.throughput: all little-endian.
struct FileHeader {
  char magic[8];  // "ELIGCPP1"
  uint64_t n_inst;
  uint64_t n_prac;
  int32_t today;  // YYYYMMDD
  int32_t pad;
};
struct FileRec {  // 32 bytes
  uint64_t key;
  int32_t until;
  uint8_t status;
  uint8_t n_open;
  uint16_t pad;
  uint32_t inst[3];
  uint32_t pad2;
};
static_assert(sizeof(FileHeader) == 32, "header layout");
static_assert(sizeof(FileRec) == 32, "record layout");

std::unordered_map<uint64_t, Rec> g_prac;
std::unordered_map<uint64_t, uint32_t> g_inst;
int32_t g_today = 0;

void Load(const char* path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) {
    std::fprintf(stderr, "cannot open %s\n", path);
    std::exit(2);
  }
  FileHeader h;
  in.read(reinterpret_cast<char*>(&h), sizeof h);
  if (!in || std::memcmp(h.magic, "ELIGCPP1", 8) != 0) {
    std::fprintf(stderr, "%s: not an ELIGCPP1 index file\n", path);
    std::exit(2);
  }
  g_today = h.today;
  std::vector<uint64_t> inst(h.n_inst);
  in.read(reinterpret_cast<char*>(inst.data()), static_cast<std::streamsize>(h.n_inst * 8));
  g_inst.reserve(h.n_inst);
  for (uint32_t i = 0; i < h.n_inst; ++i) g_inst.emplace(inst[i], i);
  g_prac.reserve(h.n_prac);
  std::vector<FileRec> chunk(1 << 16);
  for (uint64_t done = 0; done < h.n_prac;) {
    uint64_t n = std::min<uint64_t>(chunk.size(), h.n_prac - done);
    in.read(reinterpret_cast<char*>(chunk.data()), static_cast<std::streamsize>(n * sizeof(FileRec)));
    if (!in) {
      std::fprintf(stderr, "%s: truncated\n", path);
      std::exit(2);
    }
    for (uint64_t i = 0; i < n; ++i) {
      const FileRec& f = chunk[i];
      g_prac.emplace(f.key, Rec{f.until, f.status, f.n_open, {f.inst[0], f.inst[1], f.inst[2]}});
    }
    done += n;
  }
}

// contract.codes.encode_practitioner: 1-2 uppercase letters and 12 digits.
int64_t EncodePractitioner(const std::string& s) {
  size_t n = s.size();
  if (n == 0) return kKeyEmpty;
  if (n != 13 && n != 14) return kKeyMalformed;
  size_t letters = n - 12;
  for (size_t i = 0; i < letters; ++i)
    if (s[i] < 'A' || s[i] > 'Z') return kKeyMalformed;
  uint64_t digits = 0;
  for (size_t i = letters; i < n; ++i) {
    char c = s[i];
    if (c < '0' || c > '9') return kKeyMalformed;
    digits = digits * 10 + static_cast<uint64_t>(c - '0');
  }
  uint64_t l1 = static_cast<uint64_t>(s[0] - 'A' + 1);
  uint64_t l2 = letters == 2 ? static_cast<uint64_t>(s[1] - 'A' + 1) : 0;
  return static_cast<int64_t>((27 * l1 + l2) * kPracScale + digits);
}

// contract.codes.encode_institution: one uppercase letter and 11 digits.
int64_t EncodeInstitution(const std::string& s) {
  if (s.size() != 12 || s[0] < 'A' || s[0] > 'Z') return kKeyMalformed;
  uint64_t digits = 0;
  for (size_t i = 1; i < 12; ++i) {
    char c = s[i];
    if (c < '0' || c > '9') return kKeyMalformed;
    digits = digits * 10 + static_cast<uint64_t>(c - '0');
  }
  return static_cast<int64_t>(static_cast<uint64_t>(s[0] - 'A' + 1) * kInstScale + digits);
}

// A real YYYYMMDD date from 1970 on, not after the data set's day.
bool ValidDate(int32_t v) {
  int y = v / 10000, m = v / 100 % 100, d = v % 100;
  static const int kDays[] = {31, 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31};
  if (y < 1970 || y > 2149 || m < 1 || m > 12 || d < 1) return false;
  bool leap = (y % 4 == 0 && y % 100 != 0) || y % 400 == 0;
  int last = kDays[m - 1] + (m == 2 && leap ? 1 : 0);
  return d <= last && v <= g_today;
}

const Rec* Find(int64_t key) {
  if (key < 0) return nullptr;
  auto it = g_prac.find(static_cast<uint64_t>(key));
  return it == g_prac.end() ? nullptr : &it->second;
}

bool AtInstitution(const Rec& r, int64_t inst_id) {
  if (inst_id < 0) return false;
  for (int i = 0; i < r.n_open && i < 3; ++i)
    if (r.inst[i] == static_cast<uint32_t>(inst_id)) return true;
  return false;
}

// Validates the request and decides every line into resp; false and a
// "field: message" in err for a request the gateway answers INVALID_ARGUMENT.
bool Check(const v1::CheckClaimRequest& req, v1::CheckClaimResponse* resp, std::string* err) {
  if (req.claim_id().empty()) return *err = "claim_id: is required", false;
  bool pharmacy;
  if (req.channel() == v1::CHANNEL_HOSPITAL) {
    pharmacy = false;
  } else if (req.channel() == v1::CHANNEL_PHARMACY) {
    pharmacy = true;
  } else {
    return *err = "channel: is not CHANNEL_HOSPITAL or CHANNEL_PHARMACY", false;
  }
  int64_t inst_key = EncodeInstitution(req.institution_code());
  if (inst_key < 0 || req.institution_code()[0] != (pharmacy ? 'P' : 'H'))
    return *err = "institution_code: malformed", false;
  int n = req.lines_size();
  if (n == 0) return *err = "lines: a claim needs at least one line", false;
  if (n > kMaxLines) return *err = "lines: more than the maximum", false;
  int32_t claim_date = req.service_date();
  if (claim_date != 0 && !ValidDate(claim_date))
    return *err = "service_date: is not a real date YYYYMMDD or is in the future", false;
  int64_t inst_id = -1;
  auto inst = g_inst.find(static_cast<uint64_t>(inst_key));
  if (inst != g_inst.end()) inst_id = inst->second;
  bool principal_ok = false;
  if (pharmacy) {
    if (req.principal_code().empty())
      return *err = "principal_code: is required on a pharmacy claim", false;
    int64_t pkey = EncodePractitioner(req.principal_code());
    if (pkey < 0) return *err = "principal_code: malformed", false;
    if (claim_date == 0) return *err = "service_date: is required on a pharmacy claim", false;
    const Rec* p = Find(pkey);
    principal_ok = p != nullptr && AtInstitution(*p, inst_id) &&
                   p->status != v1::STATUS_SUSPENDED && p->status != v1::STATUS_TERMINATED;
  }

  resp->set_claim_id(req.claim_id());
  resp->set_index_version(1);
  auto* out = resp->mutable_lines();
  out->Reserve(n);
  int rejected = 0;
  for (int i = 0; i < n; ++i) {
    const v1::ClaimLine& line = req.lines(i);
    int32_t date = line.service_date();
    if (date == 0) {
      if (claim_date == 0) {
        *err = "lines[" + std::to_string(i) + "].service_date: is 0 and the claim has none";
        return false;
      }
    } else if (!ValidDate(date)) {
      *err = "lines[" + std::to_string(i) + "].service_date: not a real date or in the future";
      return false;
    }
    if (line.amount_fen() < 0) {
      *err = "lines[" + std::to_string(i) + "].amount_fen: is negative";
      return false;
    }
    int64_t key = EncodePractitioner(line.prescriber_code());
    const Rec* r = Find(key);  // the hash lookup
    v1::Decision decision = v1::DECISION_PAY;
    v1::Reason reason = v1::REASON_OK;
    v1::PractitionerStatus status = v1::STATUS_UNSPECIFIED;
    int32_t until = 0;
    if (r != nullptr) {
      status = static_cast<v1::PractitionerStatus>(r->status);
      if (r->n_open == 0 && status != v1::STATUS_SUSPENDED && status != v1::STATUS_TERMINATED)
        status = v1::STATUS_NOT_REGISTERED;
      until = r->until;
    } else if (key >= 0) {
      status = v1::STATUS_NOT_REGISTERED;
    }
    if (pharmacy && !principal_ok) {  // rule 1
      decision = v1::DECISION_REJECT, reason = v1::REASON_PRINCIPAL_NOT_PAYABLE;
    } else if (key < 0) {  // rule 2
      if (!(key == kKeyEmpty && pharmacy))
        decision = v1::DECISION_REJECT, reason = v1::REASON_INVALID_PRESCRIBER_CODE;
    } else if (r == nullptr || r->n_open == 0) {  // rule 3
      decision = v1::DECISION_REJECT, reason = v1::REASON_NOT_REGISTERED;
    } else if (!pharmacy && !AtInstitution(*r, inst_id)) {  // rule 4
      decision = v1::DECISION_REJECT, reason = v1::REASON_NOT_REGISTERED_AT_INSTITUTION;
    } else if (status == v1::STATUS_SUSPENDED || status == v1::STATUS_TERMINATED) {  // rule 5
      reason = status == v1::STATUS_SUSPENDED ? v1::REASON_SUSPENDED : v1::REASON_TERMINATED;
      decision = line.emergency() ? v1::DECISION_PAY_EMERGENCY_OVERRIDE : v1::DECISION_REJECT;
    } else if (status == v1::STATUS_WARNED) {  // rule 6
      reason = v1::REASON_WARNED;
    }
    v1::LineDecision* d = out->Add();
    d->set_line_id(line.line_id());
    d->set_decision(decision);
    d->set_reason(reason);
    d->set_status(status);
    d->set_status_until(until);
    rejected += decision == v1::DECISION_REJECT;
  }
  resp->set_rejected_lines(rejected);
  return true;
}

// CheckClaims: one response per request, in order; a bad request ends the
// stream with INVALID_ARGUMENT naming its position.
class ClaimStream final
    : public grpc::ServerBidiReactor<v1::CheckClaimRequest, v1::CheckClaimResponse> {
 public:
  ClaimStream() { StartRead(&req_); }

  void OnReadDone(bool ok) override {
    if (!ok) {
      Finish(grpc::Status::OK);
      return;
    }
    resp_.Clear();
    std::string err;
    if (!Check(req_, &resp_, &err)) {
      Finish(grpc::Status(grpc::StatusCode::INVALID_ARGUMENT,
                          "request " + std::to_string(seq_) + " (claim_id '" + req_.claim_id() +
                              "'): " + err));
      return;
    }
    ++seq_;
    StartWrite(&resp_);
  }

  void OnWriteDone(bool ok) override {
    if (!ok) {
      Finish(grpc::Status(grpc::StatusCode::CANCELLED, "write failed"));
      return;
    }
    StartRead(&req_);
  }

  void OnDone() override { delete this; }

 private:
  v1::CheckClaimRequest req_;
  v1::CheckClaimResponse resp_;
  int64_t seq_ = 0;
};

class Service final : public v1::EligibilityGateway::CallbackService {
  grpc::ServerUnaryReactor* CheckClaim(grpc::CallbackServerContext* ctx,
                                       const v1::CheckClaimRequest* req,
                                       v1::CheckClaimResponse* resp) override {
    grpc::ServerUnaryReactor* reactor = ctx->DefaultReactor();
    std::string err;
    if (Check(*req, resp, &err)) {
      reactor->Finish(grpc::Status::OK);
    } else {
      reactor->Finish(grpc::Status(grpc::StatusCode::INVALID_ARGUMENT, err));
    }
    return reactor;
  }

  grpc::ServerBidiReactor<v1::CheckClaimRequest, v1::CheckClaimResponse>* CheckClaims(
      grpc::CallbackServerContext*) override {
    return new ClaimStream();
  }
};

[[noreturn]] void Usage() {
  std::fprintf(stderr, "usage: eligibility_cpp_server --index FILE --port N [--host H]\n");
  std::exit(2);
}

}  // namespace

int main(int argc, char** argv) {
  std::string host = "127.0.0.1", index;
  int port = 0;
  for (int i = 1; i < argc; ++i) {
    std::string a = argv[i];
    if (i + 1 >= argc) Usage();
    if (a == "--index") {
      index = argv[++i];
    } else if (a == "--port") {
      port = std::atoi(argv[++i]);
    } else if (a == "--host") {
      host = argv[++i];
    } else {
      Usage();
    }
  }
  if (index.empty() || port <= 0) Usage();

  auto t0 = std::chrono::steady_clock::now();
  Load(index.c_str());
  double load_s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();

  Service service;
  grpc::ServerBuilder builder;
  int bound = 0;
  builder.AddListeningPort(host + ":" + std::to_string(port), grpc::InsecureServerCredentials(),
                           &bound);
  builder.SetMaxReceiveMessageSize(4 * 1024 * 1024);
  builder.SetMaxSendMessageSize(4 * 1024 * 1024);
  builder.RegisterService(&service);
  std::unique_ptr<grpc::Server> server = builder.BuildAndStart();
  if (!server || bound == 0) {
    std::fprintf(stderr, "cannot listen on %s:%d\n", host.c_str(), port);
    return 1;
  }
  std::printf("cpp server on %s:%d, %zu practitioners, %zu institutions loaded in %.2f s\n",
              host.c_str(), port, g_prac.size(), g_inst.size(), load_s);
  std::fflush(stdout);
  server->Wait();
  return 0;
}
