//! Forward kinematics of the serial chain a robot description declares.
//!
//! Joint i sits at `parent_from_joint` (translation `xyz`, then URDF-style fixed rotation `rpy` =
//! Rz(yaw) Ry(pitch) Rx(roll)) in its parent's frame and rotates about its `axis` by q_i; the tool point
//! sits at `parent_from_tool` in the last chain joint's frame. Joints marked `in_chain = false` (a gripper)
//! are not part of it.

use nalgebra::{Isometry3, Translation3, Unit, UnitQuaternion, Vector3};

/// One chain link: the fixed transform to the joint and its rotation axis.
#[derive(Debug, Clone, PartialEq)]
pub struct Link {
    pub parent_from_joint: Isometry3<f64>,
    pub axis: Unit<Vector3<f64>>,
}

/// The serial chain from the robot base to the tool point.
#[derive(Debug, Clone, PartialEq)]
pub struct Chain {
    pub links: Vec<Link>,
    /// Index into the robot's joint list of each link's joint.
    pub joint_index: Vec<usize>,
    pub parent_from_tool: Isometry3<f64>,
}

impl Chain {
    /// `base_from_tool` for the chain joints' positions `q` (one per link, in chain order).
    pub fn base_from_tool(&self, q: &[f64]) -> Isometry3<f64> {
        let mut t = Isometry3::identity();
        for (link, qi) in self.links.iter().zip(q) {
            t = t * link.parent_from_joint * UnitQuaternion::from_axis_angle(&link.axis, *qi);
        }
        t * self.parent_from_tool
    }

    /// The tool point in the base frame, metres, from the full joint vector (robot order).
    pub fn tool_position(&self, joints: &[f64]) -> Vector3<f64> {
        let mut t = Isometry3::identity();
        for (link, j) in self.links.iter().zip(&self.joint_index) {
            let qi = joints.get(*j).copied().unwrap_or(0.0);
            t = t * link.parent_from_joint * UnitQuaternion::from_axis_angle(&link.axis, qi);
        }
        (t * self.parent_from_tool).translation.vector
    }
}

impl Chain {
    /// The tool point in the base frame (metres) and its derivative by each link's joint angle:
    /// `columns[i] = d p / d q_i = z_i x (p - o_i)` with `o_i` and `z_i` link i's joint origin and axis in
    /// the base frame (the position rows of the geometric Jacobian). `joints` is the full joint vector
    /// (robot order); `columns` has one entry per link. Allocates nothing.
    pub fn tool_jacobian(&self, joints: &[f64], columns: &mut [Vector3<f64>]) -> Vector3<f64> {
        let p = self.tool_position(joints);
        let mut t = Isometry3::identity();
        for ((link, j), col) in self.links.iter().zip(&self.joint_index).zip(columns.iter_mut()) {
            t *= link.parent_from_joint;
            let axis = t.rotation * link.axis.into_inner();
            *col = axis.cross(&(p - t.translation.vector));
            let qi = joints.get(*j).copied().unwrap_or(0.0);
            t *= UnitQuaternion::from_axis_angle(&link.axis, qi);
        }
        p
    }
}

/// The fixed transform of a URDF `<origin xyz rpy>`.
pub fn origin(xyz: [f64; 3], rpy: [f64; 3]) -> Isometry3<f64> {
    Isometry3::from_parts(
        Translation3::new(xyz[0], xyz[1], xyz[2]),
        UnitQuaternion::from_euler_angles(rpy[0], rpy[1], rpy[2]),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn planar(lengths: &[f64]) -> Chain {
        let mut links = Vec::new();
        let mut prev = 0.0;
        for l in lengths {
            links.push(Link { parent_from_joint: origin([prev, 0.0, 0.0], [0.0; 3]), axis: Vector3::z_axis() });
            prev = *l;
        }
        Chain { joint_index: (0..links.len()).collect(), links, parent_from_tool: origin([prev, 0.0, 0.0], [0.0; 3]) }
    }

    #[test]
    fn planar_arm_matches_the_closed_form() {
        let c = planar(&[0.3, 0.25, 0.15]);
        let q = [-1.2, 1.0, 0.6];
        let p = c.tool_position(&q);
        let (mut a, mut x, mut y) = (0.0, 0.0, 0.0);
        for (l, qi) in [0.3, 0.25, 0.15].iter().zip(q) {
            a += qi;
            x += l * f64::cos(a);
            y += l * f64::sin(a);
        }
        assert!((p.x - x).abs() < 1e-12 && (p.y - y).abs() < 1e-12 && p.z.abs() < 1e-12);
    }

    #[test]
    fn tool_jacobian_matches_finite_differences_on_a_spatial_chain() {
        // A chain with tilted axes and rotated origins, so that every term of the geometric Jacobian matters.
        let axes = [Vector3::z_axis(), Unit::new_normalize(Vector3::new(0.0, 1.0, 0.3)), Vector3::x_axis()];
        let origins = [
            origin([0.0, 0.0, 0.1], [0.0; 3]),
            origin([0.2, 0.05, 0.0], [0.3, 0.0, 0.5]),
            origin([0.15, 0.0, 0.02], [0.0, -0.4, 0.0]),
        ];
        let links = axes.iter().zip(origins).map(|(a, o)| Link { parent_from_joint: o, axis: *a }).collect();
        let c = Chain { links, joint_index: vec![0, 1, 2], parent_from_tool: origin([0.1, 0.02, -0.03], [0.0; 3]) };
        let q = [0.4, -0.7, 1.1];
        let mut cols = [Vector3::zeros(); 3];
        let p = c.tool_jacobian(&q, &mut cols);
        assert!((p - c.tool_position(&q)).norm() < 1e-15);
        let h = 1e-6;
        for (i, col) in cols.iter().enumerate() {
            let (mut plus, mut minus) = (q, q);
            plus[i] += h;
            minus[i] -= h;
            let fd = (c.tool_position(&plus) - c.tool_position(&minus)) / (2.0 * h);
            assert!((fd - col).norm() < 1e-8, "column {i}: analytic {col:?}, finite differences {fd:?}");
        }
    }

    #[test]
    fn rpy_is_urdf_fixed_axis_order() {
        // A yaw of +90 degrees maps x to y.
        let t = origin([0.0; 3], [0.0, 0.0, std::f64::consts::FRAC_PI_2]);
        let v = t * nalgebra::Point3::new(1.0, 0.0, 0.0);
        assert!((v.y - 1.0).abs() < 1e-12 && v.x.abs() < 1e-12);
        // roll then pitch then yaw about fixed axes: R = Rz Ry Rx.
        let (r, p, y) = (0.3, -0.2, 0.9);
        let q = origin([0.0; 3], [r, p, y]).rotation;
        let want = UnitQuaternion::from_axis_angle(&Vector3::z_axis(), y)
            * UnitQuaternion::from_axis_angle(&Vector3::y_axis(), p)
            * UnitQuaternion::from_axis_angle(&Vector3::x_axis(), r);
        assert!(q.angle_to(&want) < 1e-12);
    }
}
