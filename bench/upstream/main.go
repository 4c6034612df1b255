// Command upstream-ccm is the upstream Go cloud-controller-manager (k8s.io/cloud-provider/app) wired
// to a small fake provider with the same latency model as ccm's fake (ccm/testing/fake_cloud.py):
// a fixed latency per cloud call and an optional token-bucket rate limit shared by all calls.
// `upstream-ccm raw-patch ...` is the benchmark's tight client instead (see rawPatch).
// It is built by `python -m bench --build-only` from the Go module proxy into the ccm cache and
// is used only by the benchmark harness (bench/).
package main

import (
	"context"
	"encoding/json"
	"fmt"
	"hash/fnv"
	"os"
	"sync"
	"sync/atomic"
	"time"

	"github.com/spf13/pflag"
	"golang.org/x/time/rate"
	v1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apimachinery/pkg/util/wait"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/tools/clientcmd"
	cloudprovider "k8s.io/cloud-provider"
	"k8s.io/cloud-provider/app"
	cloudcontrollerconfig "k8s.io/cloud-provider/app/config"
	"k8s.io/cloud-provider/names"
	"k8s.io/cloud-provider/options"
	"k8s.io/component-base/cli"
	cliflag "k8s.io/component-base/cli/flag"
	_ "k8s.io/component-base/metrics/prometheus/clientgo"
	_ "k8s.io/component-base/metrics/prometheus/version"
)

type benchFlags struct {
	latency       time.Duration
	ensureLatency time.Duration
	qps           float64
	burst         int
	instanceType  string
	ipPrefix      string
}

func (f *benchFlags) add(fs *pflag.FlagSet) {
	fs.DurationVar(&f.latency, "fake-latency", 0, "latency of every fake cloud call")
	fs.DurationVar(&f.ensureLatency, "fake-ensure-latency", -1, "latency of EnsureLoadBalancer (default: --fake-latency)")
	fs.Float64Var(&f.qps, "fake-qps", 0, "token-bucket rate limit of all fake cloud calls (0: none)")
	fs.IntVar(&f.burst, "fake-burst", 1, "burst of --fake-qps")
	fs.StringVar(&f.instanceType, "fake-instance-type", "fake.medium", "instance type of every node")
	fs.StringVar(&f.ipPrefix, "fake-lb-ip-prefix", "192.0", "first two octets of load-balancer ingress IPs")
}

// benchCloud answers any node name with generated metadata (like ccm's fake defaultInstance).
type benchCloud struct {
	flags   *benchFlags
	limiter *rate.Limiter
	mu      sync.Mutex
	lbs     map[string]*v1.LoadBalancerStatus
}

func (c *benchCloud) call(ctx context.Context, d time.Duration) error {
	if c.limiter != nil {
		if err := c.limiter.Wait(ctx); err != nil {
			return err
		}
	}
	if d > 0 {
		t := time.NewTimer(d)
		defer t.Stop()
		select {
		case <-t.C:
		case <-ctx.Done():
			return ctx.Err()
		}
	}
	return nil
}

func digest(s string) uint32 { h := fnv.New32a(); _, _ = h.Write([]byte(s)); return h.Sum32() }

func (c *benchCloud) Initialize(cloudprovider.ControllerClientBuilder, <-chan struct{}) {}
func (c *benchCloud) LoadBalancer() (cloudprovider.LoadBalancer, bool)                  { return c, true }
func (c *benchCloud) Instances() (cloudprovider.Instances, bool)                        { return nil, false }
func (c *benchCloud) InstancesV2() (cloudprovider.InstancesV2, bool)                    { return c, true }
func (c *benchCloud) Zones() (cloudprovider.Zones, bool)                                { return nil, false }
func (c *benchCloud) Clusters() (cloudprovider.Clusters, bool)                          { return nil, false }
func (c *benchCloud) Routes() (cloudprovider.Routes, bool)                              { return nil, false }
func (c *benchCloud) ProviderName() string                                              { return "fake" }
func (c *benchCloud) HasClusterID() bool                                                { return true }

func (c *benchCloud) InstanceExists(ctx context.Context, node *v1.Node) (bool, error) {
	return true, c.call(ctx, c.flags.latency)
}

func (c *benchCloud) InstanceShutdown(ctx context.Context, node *v1.Node) (bool, error) {
	return false, c.call(ctx, c.flags.latency)
}

func (c *benchCloud) InstanceMetadata(ctx context.Context, node *v1.Node) (*cloudprovider.InstanceMetadata, error) {
	if err := c.call(ctx, c.flags.latency); err != nil {
		return nil, err
	}
	h := digest(node.Name)
	ip := fmt.Sprintf("10.%d.%d.%d", (h>>16)&0xff, (h>>8)&0xff, h&0xff)
	return &cloudprovider.InstanceMetadata{
		ProviderID:   "fake://" + node.Name,
		InstanceType: c.flags.instanceType,
		NodeAddresses: []v1.NodeAddress{
			{Type: v1.NodeInternalIP, Address: ip},
			{Type: v1.NodeHostName, Address: node.Name},
		},
	}, nil
}

func (c *benchCloud) GetLoadBalancer(ctx context.Context, clusterName string, svc *v1.Service) (*v1.LoadBalancerStatus, bool, error) {
	if err := c.call(ctx, c.flags.latency); err != nil {
		return nil, false, err
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	st, ok := c.lbs[svc.Namespace+"/"+svc.Name]
	return st, ok, nil
}

func (c *benchCloud) GetLoadBalancerName(ctx context.Context, clusterName string, svc *v1.Service) string {
	return "a" + string(svc.UID)
}

func (c *benchCloud) EnsureLoadBalancer(ctx context.Context, clusterName string, svc *v1.Service, nodes []*v1.Node) (*v1.LoadBalancerStatus, error) {
	d := c.flags.latency
	if c.flags.ensureLatency >= 0 {
		d = c.flags.ensureLatency
	}
	if err := c.call(ctx, d); err != nil {
		return nil, err
	}
	key := svc.Namespace + "/" + svc.Name
	h := digest(key)
	st := &v1.LoadBalancerStatus{Ingress: []v1.LoadBalancerIngress{{IP: fmt.Sprintf("%s.%d.%d", c.flags.ipPrefix, (h>>8)&0xff, h&0xff)}}}
	c.mu.Lock()
	c.lbs[key] = st
	c.mu.Unlock()
	return st, nil
}

func (c *benchCloud) UpdateLoadBalancer(ctx context.Context, clusterName string, svc *v1.Service, nodes []*v1.Node) error {
	return c.call(ctx, c.flags.latency)
}

func (c *benchCloud) EnsureLoadBalancerDeleted(ctx context.Context, clusterName string, svc *v1.Service) error {
	if err := c.call(ctx, c.flags.latency); err != nil {
		return err
	}
	c.mu.Lock()
	delete(c.lbs, svc.Namespace+"/"+svc.Name)
	c.mu.Unlock()
	return nil
}

// rawPatch is the benchmark's "tight client": the same two merge patches per Node that
// initialisation needs (labels, providerID and taints on the Node; addresses on nodes/status), sent
// by a pool of goroutines with no client-side rate limit, JSON like ccm. Its rate is the ceiling a
// CCM could reach on this apiserver.
func rawPatch(args []string) error {
	fs := pflag.NewFlagSet("raw-patch", pflag.ContinueOnError)
	kubeconfig := fs.String("kubeconfig", "", "admin kubeconfig")
	selector := fs.String("selector", "", "label selector of the Nodes to patch")
	workers := fs.Int("workers", 16, "concurrent requests")
	writes := fs.Int("writes", 2, "1: one merge patch per Node; 2: Node and nodes/status")
	if err := fs.Parse(args); err != nil {
		return err
	}
	cfg, err := clientcmd.BuildConfigFromFlags("", *kubeconfig)
	if err != nil {
		return err
	}
	cfg.QPS, cfg.Burst = -1, 0
	cfg.ContentType = "application/json"
	cs, err := kubernetes.NewForConfig(cfg)
	if err != nil {
		return err
	}
	ctx := context.Background()
	list, err := cs.CoreV1().Nodes().List(ctx, metav1.ListOptions{LabelSelector: *selector})
	if err != nil {
		return err
	}
	work := make(chan string)
	var failed atomic.Int64
	var wg sync.WaitGroup
	started := time.Now()
	for i := 0; i < *workers; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for name := range work {
				h := digest(name)
				node := fmt.Sprintf(`{"metadata":{"labels":{"node.kubernetes.io/instance-type":"raw"}},"spec":{"providerID":"fake://%s","taints":null}}`, name)
				if _, err := cs.CoreV1().Nodes().Patch(ctx, name, types.MergePatchType, []byte(node), metav1.PatchOptions{}); err != nil {
					failed.Add(1)
					continue
				}
				if *writes < 2 {
					continue
				}
				status := fmt.Sprintf(`{"status":{"addresses":[{"type":"InternalIP","address":"10.%d.%d.%d"},{"type":"Hostname","address":"%s"}]}}`, (h>>16)&0xff, (h>>8)&0xff, h&0xff, name)
				if _, err := cs.CoreV1().Nodes().Patch(ctx, name, types.MergePatchType, []byte(status), metav1.PatchOptions{}, "status"); err != nil {
					failed.Add(1)
				}
			}
		}()
	}
	for _, n := range list.Items {
		work <- n.Name
	}
	close(work)
	wg.Wait()
	seconds := time.Since(started).Seconds()
	return json.NewEncoder(os.Stdout).Encode(map[string]any{
		"nodes": len(list.Items), "workers": *workers, "writes_per_node": *writes,
		"failed": failed.Load(), "seconds": seconds, "nodes_per_s": float64(len(list.Items)) / seconds,
	})
}

func main() {
	if len(os.Args) > 1 && os.Args[1] == "raw-patch" {
		if err := rawPatch(os.Args[2:]); err != nil {
			fmt.Fprintf(os.Stderr, "raw-patch: %v\n", err)
			os.Exit(1)
		}
		return
	}
	ccmOptions, err := options.NewCloudControllerManagerOptions()
	if err != nil {
		fmt.Fprintf(os.Stderr, "unable to initialize command options: %v\n", err)
		os.Exit(1)
	}
	bf := &benchFlags{}
	fss := cliflag.NamedFlagSets{}
	bf.add(fss.FlagSet("fake cloud"))
	initCloud := func(*cloudcontrollerconfig.CompletedConfig) cloudprovider.Interface {
		c := &benchCloud{flags: bf, lbs: map[string]*v1.LoadBalancerStatus{}}
		if bf.qps > 0 {
			c.limiter = rate.NewLimiter(rate.Limit(bf.qps), bf.burst)
		}
		return c
	}
	command := app.NewCloudControllerManagerCommand(ccmOptions, initCloud, app.DefaultInitFuncConstructors, names.CCMControllerAliases(), fss, wait.NeverStop)
	os.Exit(cli.Run(command))
}
