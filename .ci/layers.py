#!/usr/bin/env python3
"""Checks the crate's imports: no cycle between files, and no import that runs up the layers.

Reads every `use crate::..`, `use super::..` and `crate::..` path in src/ (test modules at the
end of a file left out; a child module may use its parent's items). Exit 1 with the offending
edges. Run from the repository root: python3 .ci/layers.py
"""
import os, re, sys
root='src'
mods={}
for dp,_,fs in os.walk(root):
    for f in fs:
        if not f.endswith('.rs'): continue
        p=os.path.join(dp,f)[4:-3]
        parts=p.split('/')
        if parts[-1] in('mod','lib'): parts=parts[:-1]
        if parts and parts[0]=='bin': continue
        mods['::'.join(parts)]=os.path.join(dp,f)
def resolve(cur,path):
    segs=path.split('::')
    base=cur.split('::') if cur else []
    if segs[0]=='crate': segs=segs[1:]; base=[]
    elif segs[0]=='super':
        # file module's parent
        while segs and segs[0]=='super': base=base[:-1]; segs=segs[1:]
    elif segs[0]=='self': segs=segs[1:]
    else: return None
    full=base+segs
    # longest prefix that is a module
    for i in range(len(full),0,-1):
        k='::'.join(full[:i])
        if k in mods: return k
    return None
edges={}
for m,p in mods.items():
    src=open(p).read()
    # drop test modules roughly
    src=re.split(r'#\[cfg\(test\)\]\s*mod tests',src)[0]
    deps=set()
    for u in re.findall(r'\buse\s+((?:crate|super|self)(?:::[A-Za-z_0-9]+)*)',src):
        r=resolve(m,u)
        if r and r!=m and not r.startswith(m+'::') : deps.add(r)
    for u in re.findall(r'\b((?:crate|super)(?:::[A-Za-z_0-9]+)+)',src):
        r=resolve(m,u)
        if r and r!=m and not r.startswith(m+'::'): deps.add(r)
    # a module depending on its own parent's file is fine (parent re-exports), exclude ancestor edges
    deps={d for d in deps if not m.startswith(d+'::')}
    edges[m]=deps
# SCC
idx={};low={};st=[];on=set();res=[];c=[0]
sys.setrecursionlimit(10000)
def sc(v):
    idx[v]=low[v]=c[0];c[0]+=1;st.append(v);on.add(v)
    for w in edges.get(v,()):
        if w not in idx: sc(w);low[v]=min(low[v],low[w])
        elif w in on: low[v]=min(low[v],idx[w])
    if low[v]==idx[v]:
        comp=[]
        while True:
            w=st.pop();on.discard(w);comp.append(w)
            if w==v:break
        if len(comp)>1: res.append(comp)
for v in edges:
    if v not in idx: sc(v)
# The layers, bottom up (ARCHITECTURE.md "Layers"): a module may import its own layer's
# modules and those below, never one above.
LAYERS = [
    ['room', 'config', 'logging', 'systemd', 'heap', 'allocated', 'test_support'],
    ['protocol'],
    ['store', 'backend', 'remote', 'client'],
    ['rooms'],
    ['service', 'migrate'],
    ['server'],
    ['daemon'],
]
layer = {m: i for i, ms in enumerate(LAYERS) for m in ms}
unplaced = sorted({m.split('::')[0] for m in mods if m} - set(layer))
up=[]
for m,ds in edges.items():
    lm=layer.get(m.split('::')[0])
    for d in ds:
        ld=layer.get(d.split('::')[0])
        if lm is not None and ld is not None and ld>lm: up.append((m,d))

problems = []
for comp in res:
    problems.append('import cycle: ' + ' -> '.join(sorted(comp)))
for m, d in sorted(up):
    problems.append(f'import up the layers: {m} uses {d}')
for m in unplaced:
    problems.append(f'module {m} is in no layer: add it to LAYERS in .ci/layers.py and to ARCHITECTURE.md')
if problems:
    print('\n'.join(problems))
    sys.exit(1)
print(f'layers: {len(mods)} modules, no cycle, no import up the layers')
