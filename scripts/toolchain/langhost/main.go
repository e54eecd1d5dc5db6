// pulumi-language-python: a small Pulumi language host for Python programs, built by
// scripts/toolchain.sh in place of the upstream host, whose Go module
// (github.com/pulumi/pulumi/sdk/python/cmd/pulumi-language-python/v3) the module proxy available
// to this project does not serve.
//
// It implements the LanguageRuntime gRPC service of the pulumi sdk/v3 it is built against:
//   - Run executes the program with the upstream `pulumi-language-python-exec` script (shipped in
//     the sdk/v3 module and installed next to this binary), passing the same arguments and the
//     PULUMI_CONFIG / PULUMI_CONFIG_SECRET_KEYS environment the upstream host passes;
//   - GetRequiredPackages / GetRequiredPlugins report the resource plugins of the installed
//     `pulumi-*` Python packages (from their pulumi-plugin.json);
//   - InstallDependencies creates the configured virtualenv and installs requirements.txt;
//   - About / GetProgramDependencies / GetPluginInfo / Handshake / RuntimeOptionsPrompts.
//
// The Python interpreter is: runtime option `virtualenv` (relative to the project root), else
// $PULUMI_PYTHON_CMD, else $VIRTUAL_ENV/bin/python, else python3 (or python) on PATH.
//   - RunPlugin runs Python plugins: CrossGuard policy packs (`pulumi preview --policy-pack DIR`),
//     as `python -u DIR` in the pack's virtualenv, streaming its output to the engine.
//
// Unimplemented: program generation and templates.
package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"

	"github.com/pulumi/pulumi/sdk/v3/go/common/util/rpcutil"
	"github.com/pulumi/pulumi/sdk/v3/go/common/version"
	pulumirpc "github.com/pulumi/pulumi/sdk/v3/proto/go"
	"google.golang.org/grpc"
	"google.golang.org/protobuf/types/known/emptypb"
)

const (
	execScriptName = "pulumi-language-python-exec"
	// exit code with which the exec script says it already showed the user an actionable message
	exitCodeUserActionable = 32
)

// valueFlags are the flags, passed by the engine or by hand, that take a separate value.
var valueFlags = map[string]bool{
	"tracing": true, "root": true, "virtualenv": true, "use-executor": true,
	"typechecker": true, "toolchain": true, "binary": true,
}

type options struct {
	tracing    string
	root       string
	virtualenv string
	executor   string
	engine     string
}

// parseArgs accepts any flag (the engine may add logging flags such as -v=9 or --logtostderr);
// the last positional argument is the engine address.
func parseArgs(args []string) options {
	var o options
	var positional []string
	for i := 0; i < len(args); i++ {
		a := args[i]
		if !strings.HasPrefix(a, "-") || a == "-" {
			positional = append(positional, a)
			continue
		}
		name := strings.TrimLeft(a, "-")
		value := ""
		hasValue := false
		if eq := strings.IndexByte(name, '='); eq >= 0 {
			name, value, hasValue = name[:eq], name[eq+1:], true
		} else if valueFlags[name] && i+1 < len(args) {
			value, hasValue = args[i+1], true
			i++
		}
		if !hasValue {
			continue
		}
		switch name {
		case "tracing":
			o.tracing = value
		case "root":
			o.root = value
		case "virtualenv":
			o.virtualenv = value
		case "use-executor":
			o.executor = value
		}
	}
	if len(positional) > 0 {
		o.engine = positional[len(positional)-1]
	}
	return o
}

type host struct {
	pulumirpc.UnimplementedLanguageRuntimeServer

	mu       sync.Mutex
	opts     options
	execPath string
}

func findExecScript(o options) (string, error) {
	if o.executor != "" {
		return o.executor, nil
	}
	var candidates []string
	if self, err := os.Executable(); err == nil {
		candidates = append(candidates, filepath.Join(filepath.Dir(self), execScriptName))
		if real, err := filepath.EvalSymlinks(self); err == nil {
			candidates = append(candidates, filepath.Join(filepath.Dir(real), execScriptName))
		}
	}
	if p, err := exec.LookPath(execScriptName); err == nil {
		candidates = append(candidates, p)
	}
	for _, c := range candidates {
		if st, err := os.Stat(c); err == nil && !st.IsDir() {
			return c, nil
		}
	}
	return "", fmt.Errorf("could not find %s next to the language host or on PATH", execScriptName)
}

// programOptions returns the runtime options (Pulumi.yaml runtime.options) of a request.
func programOptions(info *pulumirpc.ProgramInfo) map[string]any {
	if info == nil || info.GetOptions() == nil {
		return map[string]any{}
	}
	return info.GetOptions().AsMap()
}

func (h *host) rootDir(info *pulumirpc.ProgramInfo) string {
	if info != nil && info.GetRootDirectory() != "" {
		return info.GetRootDirectory()
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.opts.root != "" {
		return h.opts.root
	}
	wd, _ := os.Getwd()
	return wd
}

// virtualenvDir returns the configured virtualenv directory ("" when none is configured).
func (h *host) virtualenvDir(info *pulumirpc.ProgramInfo) string {
	venv, _ := programOptions(info)["virtualenv"].(string)
	if venv == "" {
		h.mu.Lock()
		venv = h.opts.virtualenv
		h.mu.Unlock()
	}
	if venv == "" {
		return ""
	}
	if !filepath.IsAbs(venv) {
		venv = filepath.Join(h.rootDir(info), venv)
	}
	return venv
}

// python returns the interpreter command and extra environment for a program.
func (h *host) python(info *pulumirpc.ProgramInfo) (string, []string, error) {
	if venv := h.virtualenvDir(info); venv != "" {
		py := filepath.Join(venv, "bin", "python")
		if _, err := os.Stat(py); err != nil {
			return "", nil, fmt.Errorf("the virtualenv %q configured in Pulumi.yaml does not exist: "+
				"run `pulumi install` or create it", venv)
		}
		path := filepath.Join(venv, "bin") + string(os.PathListSeparator) + os.Getenv("PATH")
		return py, []string{"VIRTUAL_ENV=" + venv, "PATH=" + path}, nil
	}
	if cmd := os.Getenv("PULUMI_PYTHON_CMD"); cmd != "" {
		return cmd, nil, nil
	}
	if venv := os.Getenv("VIRTUAL_ENV"); venv != "" {
		py := filepath.Join(venv, "bin", "python")
		if _, err := os.Stat(py); err == nil {
			return py, nil, nil
		}
	}
	for _, name := range []string{"python3", "python"} {
		if p, err := exec.LookPath(name); err == nil {
			return p, nil, nil
		}
	}
	return "", nil, errors.New("no python3 or python found on PATH (set PULUMI_PYTHON_CMD)")
}

func (h *host) Handshake(ctx context.Context, req *pulumirpc.LanguageHandshakeRequest,
) (*pulumirpc.LanguageHandshakeResponse, error) {
	h.mu.Lock()
	defer h.mu.Unlock()
	if req.GetEngineAddress() != "" {
		h.opts.engine = req.GetEngineAddress()
	}
	if req.RootDirectory != nil && *req.RootDirectory != "" {
		h.opts.root = *req.RootDirectory
	}
	return &pulumirpc.LanguageHandshakeResponse{}, nil
}

func (h *host) GetPluginInfo(ctx context.Context, _ *emptypb.Empty) (*pulumirpc.PluginInfo, error) {
	return &pulumirpc.PluginInfo{Version: version.Version}, nil
}

func (h *host) Run(ctx context.Context, req *pulumirpc.RunRequest) (*pulumirpc.RunResponse, error) {
	py, env, err := h.python(req.GetInfo())
	if err != nil {
		return &pulumirpc.RunResponse{Error: err.Error()}, nil
	}
	h.mu.Lock()
	engine, tracing := h.opts.engine, h.opts.tracing
	h.mu.Unlock()

	args := []string{h.execPath}
	add := func(k, v string) {
		if v != "" {
			args = append(args, "--"+k, v)
		}
	}
	add("monitor", req.GetMonitorAddress())
	add("engine", engine)
	add("project", req.GetProject())
	add("stack", req.GetStack())
	add("pwd", req.GetPwd())
	if req.GetDryRun() {
		add("dry_run", "true")
	}
	add("parallel", fmt.Sprint(req.GetParallel()))
	add("tracing", tracing)
	add("organization", req.GetOrganization())
	if info := req.GetInfo(); info != nil {
		add("root_directory", info.GetRootDirectory())
	}
	program := req.GetProgram()
	if info := req.GetInfo(); info != nil && info.GetProgramDirectory() != "" {
		entry := info.GetEntryPoint()
		if entry == "" {
			entry = "."
		}
		program = filepath.Join(info.GetProgramDirectory(), entry)
	}
	if program == "" {
		program = "."
	}
	args = append(args, program)
	args = append(args, req.GetArgs()...)

	configMap := req.GetConfig()
	if configMap == nil { // a stack without config: the exec script expects a JSON object, not null
		configMap = map[string]string{}
	}
	config, err := json.Marshal(configMap)
	if err != nil {
		return nil, fmt.Errorf("serializing config: %w", err)
	}
	secretKeys := req.GetConfigSecretKeys()
	if secretKeys == nil {
		secretKeys = []string{}
	}
	secretJSON, err := json.Marshal(secretKeys)
	if err != nil {
		return nil, fmt.Errorf("serializing config secret keys: %w", err)
	}

	cmd := exec.CommandContext(ctx, py, args...)
	cmd.Dir = req.GetPwd()
	cmd.Stdout = os.Stdout
	cmd.Stderr = os.Stderr
	cmd.Env = append(os.Environ(), env...)
	cmd.Env = append(cmd.Env,
		"PULUMI_CONFIG="+string(config),
		"PULUMI_CONFIG_SECRET_KEYS="+string(secretJSON),
		"PYTHONUNBUFFERED=1",
	)
	if err := cmd.Run(); err != nil {
		var exitErr *exec.ExitError
		if errors.As(err, &exitErr) {
			if exitErr.ExitCode() == exitCodeUserActionable {
				return &pulumirpc.RunResponse{Bail: true}, nil
			}
			return &pulumirpc.RunResponse{
				Error: fmt.Sprintf("Program exited with non-zero exit code: %d", exitErr.ExitCode()),
			}, nil
		}
		return &pulumirpc.RunResponse{
			Error: fmt.Sprintf("Problem executing program (could not run language executor): %v", err),
		}, nil
	}
	return &pulumirpc.RunResponse{}, nil
}

// pluginScript lists the resource plugins declared by installed pulumi-* packages.
const pluginScript = `
import json, importlib.metadata as md
out = []
for dist in md.distributions():
    name = (dist.metadata["Name"] or "").lower().replace("_", "-")
    if not name.startswith("pulumi-") or name == "pulumi-policy":
        continue
    data = None
    for f in dist.files or []:
        if f.name in ("pulumi-plugin.json", "pulumiplugin.json"):
            try:
                data = json.loads(f.read_text() or "{}")
            except Exception:
                data = None
            if data is not None:
                break
    if data is None or not data.get("resource", False):
        continue
    out.append({"name": data.get("name") or name[len("pulumi-"):],
                "version": data.get("version") or dist.version,
                "server": data.get("server") or ""})
print(json.dumps(out))
`

type pluginDep struct {
	Name    string `json:"name"`
	Version string `json:"version"`
	Server  string `json:"server"`
}

func (h *host) runPython(info *pulumirpc.ProgramInfo, dir string, args ...string) ([]byte, error) {
	py, env, err := h.python(info)
	if err != nil {
		return nil, err
	}
	cmd := exec.Command(py, args...)
	cmd.Dir = dir
	cmd.Env = append(os.Environ(), env...)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		return nil, fmt.Errorf("%s %s: %w: %s", py, strings.Join(args, " "), err, stderr.String())
	}
	return out, nil
}

func (h *host) requiredPlugins(info *pulumirpc.ProgramInfo) ([]pluginDep, error) {
	out, err := h.runPython(info, h.rootDir(info), "-c", pluginScript)
	if err != nil {
		return nil, err
	}
	var deps []pluginDep
	if err := json.Unmarshal(out, &deps); err != nil {
		return nil, fmt.Errorf("parsing plugin list: %w", err)
	}
	for i := range deps {
		if !strings.HasPrefix(deps[i].Version, "v") {
			deps[i].Version = "v" + deps[i].Version
		}
	}
	return deps, nil
}

func (h *host) GetRequiredPackages(ctx context.Context, req *pulumirpc.GetRequiredPackagesRequest,
) (*pulumirpc.GetRequiredPackagesResponse, error) {
	deps, err := h.requiredPlugins(req.GetInfo())
	if err != nil {
		return nil, err
	}
	resp := &pulumirpc.GetRequiredPackagesResponse{}
	for _, d := range deps {
		resp.Packages = append(resp.Packages, &pulumirpc.PackageDependency{
			Kind: "resource", Name: d.Name, Version: d.Version, Server: d.Server,
		})
	}
	return resp, nil
}

func (h *host) GetRequiredPlugins(ctx context.Context, req *pulumirpc.GetRequiredPluginsRequest,
) (*pulumirpc.GetRequiredPluginsResponse, error) {
	deps, err := h.requiredPlugins(req.GetInfo())
	if err != nil {
		return nil, err
	}
	resp := &pulumirpc.GetRequiredPluginsResponse{}
	for _, d := range deps {
		resp.Plugins = append(resp.Plugins, &pulumirpc.PluginDependency{
			Kind: "resource", Name: d.Name, Version: d.Version, Server: d.Server,
		})
	}
	return resp, nil
}

type streamWriter struct {
	send   func(*pulumirpc.InstallDependenciesResponse) error
	stderr bool
	mu     *sync.Mutex
}

func (w streamWriter) Write(p []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	b := append([]byte(nil), p...)
	msg := &pulumirpc.InstallDependenciesResponse{Stdout: b}
	if w.stderr {
		msg = &pulumirpc.InstallDependenciesResponse{Stderr: b}
	}
	if err := w.send(msg); err != nil {
		return 0, err
	}
	return len(p), nil
}

func (h *host) InstallDependencies(req *pulumirpc.InstallDependenciesRequest,
	server grpc.ServerStreamingServer[pulumirpc.InstallDependenciesResponse],
) error {
	info := req.GetInfo()
	dir := req.GetDirectory()
	if info != nil && info.GetProgramDirectory() != "" {
		dir = info.GetProgramDirectory()
	}
	var mu sync.Mutex
	stdout := streamWriter{send: server.Send, mu: &mu}
	stderr := streamWriter{send: server.Send, stderr: true, mu: &mu}
	run := func(name string, args ...string) error {
		fmt.Fprintf(stdout, "$ %s %s\n", name, strings.Join(args, " "))
		cmd := exec.Command(name, args...)
		cmd.Dir = dir
		cmd.Stdout, cmd.Stderr = stdout, stderr
		return cmd.Run()
	}
	venv := h.virtualenvDir(info)
	if venv != "" {
		if _, err := os.Stat(filepath.Join(venv, "bin", "python")); err != nil {
			base := os.Getenv("PULUMI_PYTHON_CMD")
			if base == "" {
				base = "python3"
			}
			if err := run(base, "-m", "venv", venv); err != nil {
				return fmt.Errorf("creating virtualenv %s: %w", venv, err)
			}
		}
	}
	reqs := filepath.Join(dir, "requirements.txt")
	if _, err := os.Stat(reqs); err != nil {
		fmt.Fprintf(stdout, "no requirements.txt in %s: nothing to install\n", dir)
		return nil
	}
	py, _, err := h.python(info)
	if err != nil {
		return err
	}
	return run(py, "-m", "pip", "install", "-r", reqs)
}

func (h *host) About(ctx context.Context, req *pulumirpc.AboutRequest) (*pulumirpc.AboutResponse, error) {
	info := req.GetInfo()
	py, _, err := h.python(info)
	if err != nil {
		return nil, err
	}
	out, err := h.runPython(info, h.rootDir(info), "-c", "import platform; print(platform.python_version())")
	if err != nil {
		return nil, err
	}
	return &pulumirpc.AboutResponse{Executable: py, Version: strings.TrimSpace(string(out))}, nil
}

func (h *host) GetProgramDependencies(ctx context.Context, req *pulumirpc.GetProgramDependenciesRequest,
) (*pulumirpc.GetProgramDependenciesResponse, error) {
	info := req.GetInfo()
	const script = `import json, importlib.metadata as md
print(json.dumps(sorted({(d.metadata["Name"] or ""): d.version for d in md.distributions()}.items())))`
	out, err := h.runPython(info, h.rootDir(info), "-c", script)
	if err != nil {
		return nil, err
	}
	var pairs [][2]string
	if err := json.Unmarshal(out, &pairs); err != nil {
		return nil, err
	}
	resp := &pulumirpc.GetProgramDependenciesResponse{}
	for _, p := range pairs {
		if p[0] == "" {
			continue
		}
		if !req.GetTransitiveDependencies() && !strings.HasPrefix(strings.ToLower(p[0]), "pulumi") {
			continue
		}
		resp.Dependencies = append(resp.Dependencies, &pulumirpc.DependencyInfo{Name: p[0], Version: p[1]})
	}
	return resp, nil
}

func (h *host) RuntimeOptionsPrompts(ctx context.Context, req *pulumirpc.RuntimeOptionsRequest,
) (*pulumirpc.RuntimeOptionsResponse, error) {
	return &pulumirpc.RuntimeOptionsResponse{}, nil
}

func main() {
	opts := parseArgs(os.Args[1:])
	execPath, err := findExecScript(opts)
	if err != nil {
		fmt.Fprintln(os.Stderr, "pulumi-language-python:", err)
		os.Exit(1)
	}
	h := &host{opts: opts, execPath: execPath}
	handle, err := rpcutil.ServeWithOptions(rpcutil.ServeOptions{
		Init: func(srv *grpc.Server) error {
			pulumirpc.RegisterLanguageRuntimeServer(srv, h)
			return nil
		},
	})
	if err != nil {
		fmt.Fprintln(os.Stderr, "pulumi-language-python: could not start the RPC server:", err)
		os.Exit(1)
	}
	// The engine reads the port from the first line of stdout.
	fmt.Printf("%d\n", handle.Port)
	if err := <-handle.Done; err != nil {
		fmt.Fprintln(os.Stderr, "pulumi-language-python: RPC server stopped:", err)
		os.Exit(1)
	}
}

// RunPlugin runs a Python plugin, i.e. a CrossGuard policy pack: the program directory holds
// PulumiPolicy.yaml and __main__.py, whose PolicyPack prints its gRPC port on stdout. The
// interpreter is chosen as for programs (the pack's `virtualenv` runtime option first).
func (h *host) RunPlugin(req *pulumirpc.RunPluginRequest, server pulumirpc.LanguageRuntime_RunPluginServer) error {
	closer, stdout, stderr, err := rpcutil.MakeRunPluginStreams(server, false)
	if err != nil {
		return err
	}
	defer closer.Close()
	py, env, err := h.python(req.GetInfo())
	if err != nil {
		return err
	}
	program := req.GetProgram()
	if info := req.GetInfo(); info != nil && info.GetProgramDirectory() != "" {
		entry := info.GetEntryPoint()
		if entry == "" {
			entry = "."
		}
		program = filepath.Join(info.GetProgramDirectory(), entry)
	}
	if program == "" {
		program = "."
	}
	cmd := exec.CommandContext(server.Context(), py, append([]string{"-u", program}, req.GetArgs()...)...)
	cmd.Dir = req.GetPwd()
	cmd.Env = append(append(append(os.Environ(), req.GetEnv()...), env...), "PYTHONUNBUFFERED=1")
	cmd.Stdout, cmd.Stderr = stdout, stderr
	if err := cmd.Run(); err != nil {
		var exitErr *exec.ExitError
		if errors.As(err, &exitErr) {
			return server.Send(&pulumirpc.RunPluginResponse{
				Output: &pulumirpc.RunPluginResponse_Exitcode{Exitcode: int32(exitErr.ExitCode())},
			})
		}
		return err
	}
	return nil
}
