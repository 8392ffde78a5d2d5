/* The search page's snippets: each result shows its page's summary from the
   search index (docs/_ext/dlcomp_site.py puts it there), instead of Sphinx
   downloading every page it lists to cut a snippet out of it. */
document.addEventListener("DOMContentLoaded", () => {
  const results = document.getElementById("search-results");
  if (!results || typeof Search === "undefined") return;
  const addSummary = (item) => {
    const index = Search._index;
    const link = item.querySelector("a");
    if (!index || !index.dlcomp_summaries || !link || item.querySelector("p.context"))
      return;
    const root = document.documentElement.dataset.content_root || "";
    const page = new URL(link.getAttribute("href"), location.href).pathname;
    const base = new URL(root, location.href).pathname;
    const docname = decodeURIComponent(page.slice(base.length)).replace(/\.html$/, "");
    const number = index.docnames.indexOf(docname);
    const summary = number >= 0 ? index.dlcomp_summaries[number] : "";
    if (!summary) return;
    const context = document.createElement("p");
    context.className = "context";
    context.textContent = summary;
    item.appendChild(context);
  };
  new MutationObserver((changes) => {
    for (const change of changes)
      for (const node of change.addedNodes)
        if (node.nodeName === "LI") addSummary(node);
  }).observe(results, { childList: true, subtree: true });
});
