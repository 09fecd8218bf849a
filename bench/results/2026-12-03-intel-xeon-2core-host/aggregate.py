# Medians of the interleaved base/host runs in this folder: python3 aggregate.py OUT.json [DIR]
import json, statistics, sys, os
R=sys.argv[2] if len(sys.argv)>2 else os.path.dirname(os.path.abspath(__file__))
out=[]
def key(exp,r):
    if exp=='scaleup': return (r['workload'],r['distribution'],r['mode'],r['workers'])
    return (r['workload'],r['scheme'],r['partitions'])
summary={}
for exp in ['scaleup','scaleout']:
    data={}
    for side in ['base','host']:
        for rnd in [1,2,3]:
            f=f'{R}/{side}-{exp}-{rnd}.json'
            if not os.path.exists(f): continue
            for r in json.load(open(f))['rows']:
                if r.get('source','measured')!='measured': continue
                data.setdefault(key(exp,r),{}).setdefault(side,[]).append((r['throughput_ops_s'],r['p50_us'],r['p99_us']))
    lines=[]
    hdr = 'workload      keys     mode          workers' if exp=='scaleup' else 'workload         scheme  partitions'
    lines.append(f'{hdr} | base cmd/s (runs)            | host cmd/s (runs)            | host/base | p50 us base/host')
    ratios=[]
    for k in sorted(data):
        b=data[k].get('base',[]); h=data[k].get('host',[])
        if not b or not h: continue
        mb=statistics.median(x[0] for x in b); mh=statistics.median(x[0] for x in h)
        pb=statistics.median(x[1] for x in b); ph=statistics.median(x[1] for x in h)
        ratio=mh/mb if mb else float('nan'); ratios.append(ratio)
        fmt=lambda v:'/'.join(f'{x[0]/1000:.1f}k' for x in v)
        ks=' '.join(f'{str(x):<12}' for x in k)
        lines.append(f'{ks} | {mb/1000:8.1f}k ({fmt(b):<18}) | {mh/1000:8.1f}k ({fmt(h):<18}) | {ratio:5.2f} | {pb:.0f}/{ph:.0f}')
        summary.setdefault(exp,[]).append({'key':list(k),'base_ops_s':[x[0] for x in b],'host_ops_s':[x[0] for x in h],'base_median':mb,'host_median':mh,'ratio':ratio,'base_p50_us':pb,'host_p50_us':ph})
    if ratios:
        lines.append(f'geometric mean host/base over {len(ratios)} points: {statistics.geometric_mean(ratios):.3f}; median ratio {statistics.median(ratios):.3f}')
    print(f'== {exp}\n'+'\n'.join(lines)+'\n')
json.dump(summary,open(sys.argv[1],'w'),indent=1)
