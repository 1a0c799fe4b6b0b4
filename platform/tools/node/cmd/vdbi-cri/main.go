// Command vdbi-cri is a minimal CRI client for vdbi's node tests (crictl is not available from
// the Go module proxy). It talks to containerd's CRI service over its unix socket and prints
// JSON, so scripts and Rust tests can read the results.
//
//	vdbi-cri [-endpoint unix:///path/containerd.sock] [-timeout 30s] COMMAND [flags]
//
//	runp    -name N -namespace NS -uid UID [-label k=v]... [-annotation k=v]...   -> {"id": ...}
//	create  -sandbox ID -pod-name N -pod-namespace NS -pod-uid UID -name C -image REF
//	        [-env K=V]... [-label k=v]... [-- ARGS...]                          -> {"id": ...}
//	inspect ID          container state and the OCI process env of the created container
//	start ID | stop ID | rm ID | stopp ID | rmp ID
//	exec ID -- CMD...   ExecSync, prints stdout/stderr/exit code
//	ps [-sandbox ID]    containers (of one sandbox): [{"id", "name", "state"}]
//	image REF           image status ({"present": bool})
//	build-image -busybox PATH -out TAR -ref REF [-cmd ARG]... [-add SRC=DST]...
//	                    writes an OCI image archive (one layer: busybox + applet links) for
//	                    `ctr -n k8s.io images import`
//
// Environment values can be credentials: `inspect` prints them because showing the substituted
// environment is its purpose in tests; nothing else prints them.
package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"os"
	"strings"
	"time"
	"unicode/utf8"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	cri "k8s.io/cri-api/pkg/apis/runtime/v1"
)

func main() {
	if err := run(os.Args[1:]); err != nil {
		fmt.Fprintln(os.Stderr, "vdbi-cri:", err)
		os.Exit(1)
	}
}

func run(args []string) error {
	global := flag.NewFlagSet("vdbi-cri", flag.ContinueOnError)
	endpoint := global.String("endpoint", "unix:///run/containerd/containerd.sock", "CRI endpoint")
	timeout := global.Duration("timeout", 30*time.Second, "timeout of each CRI call")
	if err := global.Parse(args); err != nil {
		return err
	}
	if global.NArg() == 0 {
		return errors.New("missing command (runp, create, inspect, start, stop, rm, stopp, rmp, exec, image, build-image)")
	}
	cmd, rest := global.Arg(0), global.Args()[1:]
	if cmd == "build-image" {
		return buildImageCmd(rest)
	}

	conn, err := grpc.NewClient(*endpoint, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		return fmt.Errorf("dial %s: %w", *endpoint, err)
	}
	defer conn.Close()
	c := client{
		rt:      cri.NewRuntimeServiceClient(conn),
		img:     cri.NewImageServiceClient(conn),
		timeout: *timeout,
	}

	switch cmd {
	case "runp":
		return c.runPod(rest)
	case "create":
		return c.create(rest)
	case "inspect":
		return c.withID(rest, c.inspect)
	case "start":
		return c.withID(rest, c.start)
	case "stop":
		return c.withID(rest, c.stop)
	case "rm":
		return c.withID(rest, c.remove)
	case "stopp":
		return c.withID(rest, c.stopPod)
	case "rmp":
		return c.withID(rest, c.removePod)
	case "exec":
		return c.exec(rest)
	case "image":
		return c.withID(rest, c.image)
	case "ps":
		return c.ps(rest)
	default:
		return fmt.Errorf("unknown command %q", cmd)
	}
}

type client struct {
	rt      cri.RuntimeServiceClient
	img     cri.ImageServiceClient
	timeout time.Duration
}

func (c client) ctx() (context.Context, context.CancelFunc) {
	return context.WithTimeout(context.Background(), c.timeout)
}

func (c client) withID(args []string, f func(id string) error) error {
	if len(args) != 1 {
		return errors.New("expected exactly one id argument")
	}
	return f(args[0])
}

// kvFlags collects repeated k=v flags.
type kvFlags map[string]string

func (m kvFlags) String() string { return fmt.Sprint(map[string]string(m)) }
func (m kvFlags) Set(v string) error {
	k, val, ok := strings.Cut(v, "=")
	if !ok || k == "" {
		return fmt.Errorf("want KEY=VALUE, got %q", v)
	}
	m[k] = val
	return nil
}

// listFlags collects repeated flags in order.
type listFlags []string

func (l *listFlags) String() string     { return strings.Join(*l, ",") }
func (l *listFlags) Set(v string) error { *l = append(*l, v); return nil }

func printJSON(v any) error {
	enc := json.NewEncoder(os.Stdout)
	enc.SetIndent("", "  ")
	return enc.Encode(v)
}

// podConfig is the sandbox config shared by runp and create (CRI wants it in both calls).
func podConfig(name, namespace, uid string, labels, annotations map[string]string) *cri.PodSandboxConfig {
	return &cri.PodSandboxConfig{
		Metadata:    &cri.PodSandboxMetadata{Name: name, Namespace: namespace, Uid: uid},
		Labels:      labels,
		Annotations: annotations,
		Linux: &cri.LinuxPodSandboxConfig{
			SecurityContext: &cri.LinuxSandboxSecurityContext{
				// Host network: no CNI needed.
				NamespaceOptions: &cri.NamespaceOption{Network: cri.NamespaceMode_NODE},
			},
		},
	}
}

func (c client) runPod(args []string) error {
	fs := flag.NewFlagSet("runp", flag.ContinueOnError)
	name := fs.String("name", "", "pod name")
	namespace := fs.String("namespace", "default", "pod namespace")
	uid := fs.String("uid", "", "pod UID")
	labels, annotations := kvFlags{}, kvFlags{}
	fs.Var(labels, "label", "pod label k=v (repeatable)")
	fs.Var(annotations, "annotation", "pod annotation k=v (repeatable)")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if *name == "" || *uid == "" {
		return errors.New("runp needs -name and -uid")
	}
	ctx, cancel := c.ctx()
	defer cancel()
	resp, err := c.rt.RunPodSandbox(ctx, &cri.RunPodSandboxRequest{
		Config: podConfig(*name, *namespace, *uid, labels, annotations),
	})
	if err != nil {
		return fmt.Errorf("RunPodSandbox: %w", err)
	}
	return printJSON(map[string]string{"id": resp.PodSandboxId})
}

func (c client) create(args []string) error {
	fs := flag.NewFlagSet("create", flag.ContinueOnError)
	sandbox := fs.String("sandbox", "", "pod sandbox id")
	podName := fs.String("pod-name", "", "pod name (as given to runp)")
	podNamespace := fs.String("pod-namespace", "default", "pod namespace (as given to runp)")
	podUID := fs.String("pod-uid", "", "pod UID (as given to runp)")
	name := fs.String("name", "", "container name")
	image := fs.String("image", "", "image reference")
	var env listFlags
	fs.Var(&env, "env", "environment variable K=V (repeatable)")
	podLabels, podAnnotations := kvFlags{}, kvFlags{}
	fs.Var(podLabels, "pod-label", "pod label k=v (as given to runp)")
	fs.Var(podAnnotations, "pod-annotation", "pod annotation k=v (as given to runp)")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if *sandbox == "" || *name == "" || *image == "" || *podName == "" || *podUID == "" {
		return errors.New("create needs -sandbox, -pod-name, -pod-uid, -name and -image")
	}
	var kvs []*cri.KeyValue
	for _, e := range env {
		k, v, ok := strings.Cut(e, "=")
		if !ok {
			return fmt.Errorf("-env wants K=V, got a value without '='")
		}
		kvs = append(kvs, &cri.KeyValue{Key: k, Value: []byte(v)})
	}
	ctx, cancel := c.ctx()
	defer cancel()
	resp, err := c.rt.CreateContainer(ctx, &cri.CreateContainerRequest{
		PodSandboxId: *sandbox,
		Config: &cri.ContainerConfig{
			Metadata: &cri.ContainerMetadata{Name: *name},
			Image:    &cri.ImageSpec{Image: *image},
			Args:     fs.Args(),
			Envs:     kvs,
		},
		SandboxConfig: podConfig(*podName, *podNamespace, *podUID, podLabels, podAnnotations),
	})
	if err != nil {
		return fmt.Errorf("CreateContainer: %w", err)
	}
	return printJSON(map[string]string{"id": resp.ContainerId})
}

// inspect prints the container state and the env of the OCI spec containerd generated for it
// (after NRI adjustments), taken from the verbose status info.
func (c client) inspect(id string) error {
	ctx, cancel := c.ctx()
	defer cancel()
	resp, err := c.rt.ContainerStatus(ctx, &cri.ContainerStatusRequest{ContainerId: id, Verbose: true})
	if err != nil {
		return fmt.Errorf("ContainerStatus: %w", err)
	}
	var info struct {
		Config struct {
			Envs []struct {
				Key   string          `json:"key"`
				Value json.RawMessage `json:"value"`
			} `json:"envs"`
		} `json:"config"`
		RuntimeSpec struct {
			Process struct {
				Env  []string `json:"env"`
				Args []string `json:"args"`
			} `json:"process"`
		} `json:"runtimeSpec"`
	}
	if raw, ok := resp.Info["info"]; ok {
		if err := json.Unmarshal([]byte(raw), &info); err != nil {
			return fmt.Errorf("decode verbose container info: %w", err)
		}
	}
	// The CRI request's env (what the kubelet sent, i.e. the pod spec) as opposed to the OCI
	// process env above (what the container gets after NRI adjustments).
	criEnv := []string{}
	for _, kv := range info.Config.Envs {
		criEnv = append(criEnv, kv.Key+"="+decodeValue(kv.Value))
	}
	return printJSON(map[string]any{
		"id":       resp.Status.GetId(),
		"criEnv":   criEnv,
		"state":    resp.Status.GetState().String(),
		"exitCode": resp.Status.GetExitCode(),
		"reason":   resp.Status.GetReason(),
		"env":      info.RuntimeSpec.Process.Env,
		"args":     info.RuntimeSpec.Process.Args,
	})
}

// decodeValue reads a CRI KeyValue value from containerd's JSON: a base64 string where the
// field is bytes (cri-api v0.37+), a plain string before.
func decodeValue(raw json.RawMessage) string {
	var b []byte
	if err := json.Unmarshal(raw, &b); err == nil && utf8.Valid(b) {
		return string(b)
	}
	var s string
	if err := json.Unmarshal(raw, &s); err == nil {
		return s
	}
	return string(raw)
}

func (c client) start(id string) error {
	ctx, cancel := c.ctx()
	defer cancel()
	if _, err := c.rt.StartContainer(ctx, &cri.StartContainerRequest{ContainerId: id}); err != nil {
		return fmt.Errorf("StartContainer: %w", err)
	}
	return printJSON(map[string]string{"started": id})
}

func (c client) stop(id string) error {
	ctx, cancel := c.ctx()
	defer cancel()
	if _, err := c.rt.StopContainer(ctx, &cri.StopContainerRequest{ContainerId: id, Timeout: 2}); err != nil {
		return fmt.Errorf("StopContainer: %w", err)
	}
	return printJSON(map[string]string{"stopped": id})
}

func (c client) remove(id string) error {
	ctx, cancel := c.ctx()
	defer cancel()
	if _, err := c.rt.RemoveContainer(ctx, &cri.RemoveContainerRequest{ContainerId: id}); err != nil {
		return fmt.Errorf("RemoveContainer: %w", err)
	}
	return printJSON(map[string]string{"removed": id})
}

func (c client) stopPod(id string) error {
	ctx, cancel := c.ctx()
	defer cancel()
	if _, err := c.rt.StopPodSandbox(ctx, &cri.StopPodSandboxRequest{PodSandboxId: id}); err != nil {
		return fmt.Errorf("StopPodSandbox: %w", err)
	}
	return printJSON(map[string]string{"stopped": id})
}

func (c client) removePod(id string) error {
	ctx, cancel := c.ctx()
	defer cancel()
	if _, err := c.rt.RemovePodSandbox(ctx, &cri.RemovePodSandboxRequest{PodSandboxId: id}); err != nil {
		return fmt.Errorf("RemovePodSandbox: %w", err)
	}
	return printJSON(map[string]string{"removed": id})
}

func (c client) exec(args []string) error {
	if len(args) < 2 {
		return errors.New("exec needs a container id and a command")
	}
	id, cmd := args[0], args[1:]
	if cmd[0] == "--" {
		cmd = cmd[1:]
	}
	ctx, cancel := c.ctx()
	defer cancel()
	resp, err := c.rt.ExecSync(ctx, &cri.ExecSyncRequest{ContainerId: id, Cmd: cmd, Timeout: 10})
	if err != nil {
		return fmt.Errorf("ExecSync: %w", err)
	}
	return printJSON(map[string]any{
		"stdout":   string(resp.Stdout),
		"stderr":   string(resp.Stderr),
		"exitCode": resp.ExitCode,
	})
}

func (c client) ps(args []string) error {
	fs := flag.NewFlagSet("ps", flag.ContinueOnError)
	sandbox := fs.String("sandbox", "", "only containers of this pod sandbox")
	if err := fs.Parse(args); err != nil {
		return err
	}
	ctx, cancel := c.ctx()
	defer cancel()
	req := &cri.ListContainersRequest{}
	if *sandbox != "" {
		req.Filter = &cri.ContainerFilter{PodSandboxId: *sandbox}
	}
	resp, err := c.rt.ListContainers(ctx, req)
	if err != nil {
		return fmt.Errorf("ListContainers: %w", err)
	}
	out := []map[string]string{}
	for _, ctr := range resp.Containers {
		out = append(out, map[string]string{
			"id":    ctr.Id,
			"name":  ctr.GetMetadata().GetName(),
			"state": ctr.State.String(),
		})
	}
	return printJSON(out)
}

func (c client) image(ref string) error {
	ctx, cancel := c.ctx()
	defer cancel()
	resp, err := c.img.ImageStatus(ctx, &cri.ImageStatusRequest{Image: &cri.ImageSpec{Image: ref}})
	if err != nil {
		return fmt.Errorf("ImageStatus: %w", err)
	}
	return printJSON(map[string]any{"present": resp.Image != nil})
}
