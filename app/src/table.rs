//! Aligned text tables, for people: the summary and `verge check`.

/// Columns left-aligned to their widest cell, two spaces apart.
pub fn render<const N: usize>(head: [&str; N], rows: &[[String; N]]) -> String {
    let mut width = head.map(|h| h.chars().count());
    for row in rows {
        for (w, cell) in width.iter_mut().zip(row) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let mut out = String::new();
    let head = head.map(String::from);
    for row in std::iter::once(&head).chain(rows) {
        let cells: Vec<String> = row
            .iter()
            .zip(width)
            .map(|(cell, w)| format!("{cell:<w$}"))
            .collect();
        out.push_str(cells.join("  ").trim_end());
        out.push('\n');
    }
    out
}

#[cfg(test)]
mod tests {
    #[test]
    fn columns_align_to_the_widest_cell() {
        let t = super::render(
            ["a", "bb"],
            &[["xyz".into(), "1".into()], ["q".into(), "".into()]],
        );
        assert_eq!(t, "a    bb\nxyz  1\nq\n");
    }
}
