// Command kube-dryrun sends every object of one or more multi-document YAML files to a real
// kube-apiserver as a server-side apply with dryRun=All and fieldValidation=Strict, so the
// apiserver runs its full validation (schema, defaulting, admission) without storing anything.
//
// It is the chart's stand-in for `kubectl apply --server-side --dry-run=server`: no kubectl is
// built here, client-go is already in this module through helm.
//
// Usage:
//
//	kube-dryrun [--kubeconfig FILE] [--namespace NS] [--allow-missing GROUP/Kind,...] FILE...
//
// --ensure-namespaces first applies (for real) the Namespace objects of the input, so that the
// namespaced objects can be dry-run in them. --mode=apply and --mode=delete really apply or
// delete the objects (used by the chart tests for a short-lived Secret, then removed).
//
// Exit status: 0 when every object was accepted (or skipped because its kind is listed in
// --allow-missing and the server does not serve it), 1 otherwise. Warnings returned by the
// apiserver count as failures unless --allow-warnings is given.
package main

import (
	"bytes"
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"os"
	"sort"
	"strings"
	"sync"
	"time"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/types"
	utilyaml "k8s.io/apimachinery/pkg/util/yaml"
	"k8s.io/client-go/discovery"
	"k8s.io/client-go/discovery/cached/memory"
	"k8s.io/client-go/dynamic"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/restmapper"
	"k8s.io/client-go/tools/clientcmd"
)

type warningCollector struct {
	mu   sync.Mutex
	msgs []string
}

func (w *warningCollector) HandleWarningHeader(code int, agent string, text string) {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.msgs = append(w.msgs, text)
}

func (w *warningCollector) take() []string {
	w.mu.Lock()
	defer w.mu.Unlock()
	out := w.msgs
	w.msgs = nil
	return out
}

type object struct {
	file string
	obj  *unstructured.Unstructured
}

func readObjects(path string) ([]object, error) {
	var r io.Reader
	if path == "-" {
		r = os.Stdin
	} else {
		data, err := os.ReadFile(path)
		if err != nil {
			return nil, err
		}
		r = bytes.NewReader(data)
	}
	dec := utilyaml.NewYAMLOrJSONDecoder(r, 4096)
	var out []object
	for {
		var m map[string]interface{}
		if err := dec.Decode(&m); err != nil {
			if errors.Is(err, io.EOF) {
				return out, nil
			}
			return nil, fmt.Errorf("%s: %w", path, err)
		}
		if len(m) == 0 {
			continue
		}
		u := &unstructured.Unstructured{Object: m}
		if u.IsList() {
			items, err := u.ToList()
			if err != nil {
				return nil, fmt.Errorf("%s: %w", path, err)
			}
			for i := range items.Items {
				out = append(out, object{path, &items.Items[i]})
			}
			continue
		}
		out = append(out, object{path, u})
	}
}

// isTransient: no answer from the apiserver (connection refused or reset, timeout, EOF).
func isTransient(err error) bool {
	if apierrors.IsServerTimeout(err) || apierrors.IsTimeout(err) || apierrors.IsTooManyRequests(err) {
		return true
	}
	var status apierrors.APIStatus
	if errors.As(err, &status) {
		return false
	}
	var netErr net.Error
	if errors.As(err, &netErr) || errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) {
		return true
	}
	msg := err.Error()
	return strings.Contains(msg, "connection refused") || strings.Contains(msg, "connection reset")
}

func main() {
	kubeconfig := flag.String("kubeconfig", os.Getenv("KUBECONFIG"), "kubeconfig file (default $KUBECONFIG)")
	namespace := flag.String("namespace", "default", "namespace for namespaced objects that name none")
	allowMissing := flag.String("allow-missing", "", "comma-separated GROUP/Kind list that may be skipped when the server does not serve them (CRD-backed optional objects)")
	allowWarnings := flag.Bool("allow-warnings", false, "do not fail on apiserver warnings")
	timeout := flag.Duration("timeout", 120*time.Second, "overall deadline of the requests")
	quiet := flag.Bool("quiet", false, "print failures and the summary only")
	mode := flag.String("mode", "dry-run", "dry-run | apply | delete")
	ensureNamespaces := flag.Bool("ensure-namespaces", false, "really apply the input's Namespace objects first")
	wait := flag.Duration("wait", 60*time.Second, "how long to wait for the apiserver to answer before giving up")
	retries := flag.Int("retries", 30, "retries (1 s apart) of a request that got no answer from the apiserver")
	flag.Parse()
	if flag.NArg() == 0 {
		fmt.Fprintln(os.Stderr, "usage: kube-dryrun [flags] FILE... ('-' for stdin)")
		os.Exit(2)
	}

	allowed := map[string]bool{}
	for _, s := range strings.Split(*allowMissing, ",") {
		if s = strings.TrimSpace(s); s != "" {
			allowed[s] = true
		}
	}

	cfg, err := clientcmd.BuildConfigFromFlags("", *kubeconfig)
	if err != nil {
		fmt.Fprintf(os.Stderr, "kube-dryrun: kubeconfig: %v\n", err)
		os.Exit(1)
	}
	warnings := &warningCollector{}
	cfg.WarningHandler = warnings
	cfg.Timeout = 20 * time.Second
	cfg.UserAgent = "vdbi-chart-dryrun"
	rest.SetDefaultWarningHandler(warnings)

	dc, err := discovery.NewDiscoveryClientForConfig(cfg)
	if err != nil {
		fmt.Fprintf(os.Stderr, "kube-dryrun: discovery: %v\n", err)
		os.Exit(1)
	}
	// Wait for the apiserver (a shared local platform may be restarting it).
	deadline := time.Now().Add(*wait)
	for {
		_, err := dc.ServerVersion()
		if err == nil {
			break
		}
		if time.Now().After(deadline) {
			fmt.Fprintf(os.Stderr, "kube-dryrun: apiserver not reachable after %s: %v\n", *wait, err)
			os.Exit(1)
		}
		time.Sleep(time.Second)
	}
	mapper := restmapper.NewDeferredDiscoveryRESTMapper(memory.NewMemCacheClient(dc))
	dyn, err := dynamic.NewForConfig(cfg)
	if err != nil {
		fmt.Fprintf(os.Stderr, "kube-dryrun: client: %v\n", err)
		os.Exit(1)
	}

	var objs []object
	for _, f := range flag.Args() {
		o, err := readObjects(f)
		if err != nil {
			fmt.Fprintf(os.Stderr, "kube-dryrun: %v\n", err)
			os.Exit(1)
		}
		objs = append(objs, o...)
	}

	ctx, cancel := context.WithTimeout(context.Background(), *timeout)
	defer cancel()

	switch *mode {
	case "dry-run", "apply", "delete":
	default:
		fmt.Fprintf(os.Stderr, "kube-dryrun: unknown --mode %q\n", *mode)
		os.Exit(2)
	}
	if *ensureNamespaces && *mode == "dry-run" {
		var rest []object
		for _, o := range objs {
			if o.obj.GetAPIVersion() == "v1" && o.obj.GetKind() == "Namespace" {
				data, _ := o.obj.MarshalJSON()
				force := true
				_, err := dyn.Resource(schema.GroupVersionResource{Version: "v1", Resource: "namespaces"}).Patch(ctx, o.obj.GetName(), types.ApplyPatchType, data, metav1.PatchOptions{FieldManager: "vdbi-chart-check", Force: &force, FieldValidation: "Strict"})
				if err != nil {
					fmt.Printf("FAIL  Namespace %s (%s): %v\n", o.obj.GetName(), o.file, err)
					os.Exit(1)
				}
				if !*quiet {
					fmt.Printf("APPLY Namespace %s (real: the objects below are dry-run in it)\n", o.obj.GetName())
				}
				continue
			}
			rest = append(rest, o)
		}
		objs = rest
	}

	var ok, skipped, failed int
	skippedKinds := map[string]bool{}
	for _, o := range objs {
		u := o.obj
		gvk := u.GroupVersionKind()
		id := fmt.Sprintf("%s %s", gvk.Kind, u.GetName())
		if u.GetNamespace() != "" {
			id = fmt.Sprintf("%s %s/%s", gvk.Kind, u.GetNamespace(), u.GetName())
		}
		mapping, err := mapper.RESTMapping(gvk.GroupKind(), gvk.Version)
		if err != nil {
			gk := gvk.Group + "/" + gvk.Kind
			if meta.IsNoMatchError(err) && allowed[gk] {
				skipped++
				skippedKinds[gk] = true
				if !*quiet {
					fmt.Printf("SKIP  %s (%s: the server does not serve %s)\n", id, o.file, gvk.GroupVersion())
				}
				continue
			}
			failed++
			fmt.Printf("FAIL  %s (%s): %v\n", id, o.file, err)
			continue
		}
		var ri dynamic.ResourceInterface
		if mapping.Scope.Name() == meta.RESTScopeNameNamespace {
			ns := u.GetNamespace()
			if ns == "" {
				ns = *namespace
			}
			ri = dyn.Resource(mapping.Resource).Namespace(ns)
		} else {
			if u.GetNamespace() != "" {
				failed++
				fmt.Printf("FAIL  %s (%s): cluster-scoped object carries a namespace\n", id, o.file)
				continue
			}
			ri = dyn.Resource(mapping.Resource)
		}
		data, err := u.MarshalJSON()
		if err != nil {
			failed++
			fmt.Printf("FAIL  %s (%s): %v\n", id, o.file, err)
			continue
		}
		force := true
		var ws []string
		// The apiserver may be restarting (a shared local platform): retry transport errors,
		// never an answer of the apiserver.
		var dryRun []string
		if *mode == "dry-run" {
			dryRun = []string{metav1.DryRunAll}
		}
		for attempt := 0; ; attempt++ {
			if *mode == "delete" {
				err = ri.Delete(ctx, u.GetName(), metav1.DeleteOptions{})
				if apierrors.IsNotFound(err) {
					err = nil
				}
			} else {
				_, err = ri.Patch(ctx, u.GetName(), types.ApplyPatchType, data, metav1.PatchOptions{
					DryRun:          dryRun,
					FieldManager:    "vdbi-chart-check",
					Force:           &force,
					FieldValidation: "Strict",
				})
			}
			ws = warnings.take()
			if err == nil || !isTransient(err) || attempt >= *retries || ctx.Err() != nil {
				break
			}
			time.Sleep(time.Second)
		}
		if err != nil {
			failed++
			fmt.Printf("FAIL  %s (%s): %v\n", id, o.file, err)
			continue
		}
		if len(ws) > 0 && !*allowWarnings {
			failed++
			fmt.Printf("FAIL  %s (%s): apiserver warnings: %s\n", id, o.file, strings.Join(ws, "; "))
			continue
		}
		ok++
		if !*quiet {
			suffix := ""
			if len(ws) > 0 {
				suffix = " (warnings: " + strings.Join(ws, "; ") + ")"
			}
			fmt.Printf("OK    %s%s\n", id, suffix)
		}
	}
	kinds := make([]string, 0, len(skippedKinds))
	for k := range skippedKinds {
		kinds = append(kinds, k)
	}
	sort.Strings(kinds)
	verb := map[string]string{"dry-run": "accepted", "apply": "applied", "delete": "deleted"}[*mode]
	fmt.Printf("kube-dryrun: %d %s, %d failed, %d skipped", ok, verb, failed, skipped)
	if len(kinds) > 0 {
		fmt.Printf(" (not served: %s)", strings.Join(kinds, ", "))
	}
	fmt.Println()
	if failed > 0 {
		os.Exit(1)
	}
}
