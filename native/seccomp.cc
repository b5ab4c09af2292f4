// The seccomp filter (--seccomp kill|log|trap): the system calls the daemon may make, as a
// BPF program installed on the thread that then execve's into the sandbox, so that the
// daemon (Node, V8, libuv and this addon) runs under it from its first instruction. A call
// outside the list kills the process (kill), is logged by the kernel and allowed (log), or
// raises SIGSYS (trap). The list was taken from traces (strace -ff) of every daemon the unit
// and guest test suites start, with the calls Node may make on rarer paths; see
// src/sandbox.ts. x86_64 only: other architectures refuse the option.
#include "common.h"

#include <linux/audit.h>
#include <linux/filter.h>
#include <linux/seccomp.h>
#include <stddef.h>
#include <sys/prctl.h>
#include <sys/syscall.h>

#include <string>
#include <vector>

namespace vfsn {

namespace {

#if defined(__x86_64__)
constexpr uint32_t kArch = AUDIT_ARCH_X86_64;
constexpr uint32_t kX32Bit = 0x40000000;

// The allowed calls (SYS_* of this machine's headers; one missing from older headers is
// simply not in the list).
const std::vector<long>& Allowed() {
  static const std::vector<long> list = {
#define A(name) SYS_##name,
#include "seccomp-allow.h"
#undef A
  };
  return list;
}
#endif

std::string InstallFilter(const std::string& action) {
#if !defined(__x86_64__)
  return "seccomp filters are only built for x86_64";
#else
  uint32_t deny = action == "kill" ? SECCOMP_RET_KILL_PROCESS : action == "log" ? SECCOMP_RET_LOG : SECCOMP_RET_TRAP;
  std::vector<sock_filter> prog;
  // Another architecture's calls (int 0x80 from a 64-bit process) and x32 ones: denied.
  prog.push_back(BPF_STMT(BPF_LD | BPF_W | BPF_ABS, offsetof(seccomp_data, arch)));
  prog.push_back(BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, kArch, 1, 0));
  prog.push_back(BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_KILL_PROCESS));
  prog.push_back(BPF_STMT(BPF_LD | BPF_W | BPF_ABS, offsetof(seccomp_data, nr)));
  prog.push_back(BPF_JUMP(BPF_JMP | BPF_JGE | BPF_K, kX32Bit, 0, 1));
  prog.push_back(BPF_STMT(BPF_RET | BPF_K, deny));
  for (long nr : Allowed()) {
    prog.push_back(BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, static_cast<uint32_t>(nr), 0, 1));
    prog.push_back(BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ALLOW));
  }
  prog.push_back(BPF_STMT(BPF_RET | BPF_K, deny));
  sock_fprog fprog{static_cast<unsigned short>(prog.size()), prog.data()};
  // This thread only: it execve's at once, and the new program inherits the filter.
  if (syscall(SYS_seccomp, SECCOMP_SET_MODE_FILTER, 0, &fprog) < 0) return std::string("seccomp: ") + strerror(errno);
  return "";
#endif
}

// installSeccomp(action: 'kill' | 'log' | 'trap') -> "" or what failed.
Napi::Value InstallSeccomp(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  if (info.Length() < 1 || !info[0].IsString()) return ThrowType(env, "installSeccomp(action)");
  std::string action = info[0].As<Napi::String>().Utf8Value();
  if (action != "kill" && action != "log" && action != "trap") return ThrowType(env, "installSeccomp: kill, log or trap");
  return Napi::String::New(env, InstallFilter(action));
}

// seccompAllowed() -> the allowed system call numbers (for the tests).
Napi::Value SeccompAllowed(const Napi::CallbackInfo& info) {
  Napi::Array a = Napi::Array::New(info.Env());
#if defined(__x86_64__)
  uint32_t i = 0;
  for (long nr : Allowed()) a.Set(i++, Napi::Number::New(info.Env(), static_cast<double>(nr)));
#endif
  return a;
}

}  // namespace

void InitSeccomp(Napi::Env env, Napi::Object exports) {
  exports.Set("installSeccomp", Napi::Function::New(env, InstallSeccomp));
  exports.Set("seccompAllowed", Napi::Function::New(env, SeccompAllowed));
}

}  // namespace vfsn
